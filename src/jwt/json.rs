//! JSON as the JWT layer reads a token's header and claims: every object, at any depth, names
//! each member once. serde_json keeps the last of two members of one name; other parsers keep
//! the first, or refuse. A token naming `sub` (or `alg`, `kid`) twice would then mean one thing
//! here and another to the next reader of the same token, so such a token is refused (RFC 7515
//! §4 and RFC 7519 §4 leave the choice to refuse or keep the last).
//!
//! The check is a serde visitor over serde_json's own parser, not a parser of its own: names
//! are compared as serde_json decodes them, escapes resolved (`"s\u0075b"` is `sub`), and
//! nesting is bounded by serde_json's recursion limit.

use std::{cell::Cell, collections::HashSet, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why a segment is not JSON the layer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotAccepted {
    /// Not one JSON value.
    NotJson,
    /// An object names a member twice.
    Repeated,
}

/// Checks that `bytes` is one JSON value whose objects each name every member once.
pub(crate) fn check_unique_members(bytes: &[u8]) -> Result<(), NotAccepted> {
    let repeated = Cell::new(false);
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let checked = UniqueMembers {
        repeated: &repeated,
    }
    .deserialize(&mut json)
    .and_then(|()| json.end());
    match checked {
        Ok(()) => Ok(()),
        // Said by the visitor, not read from the error: a parse error is never taken for it.
        Err(_) if repeated.get() => Err(NotAccepted::Repeated),
        Err(_) => Err(NotAccepted::NotJson),
    }
}

/// One JSON value, walked for its objects' member names and otherwise ignored.
#[derive(Clone, Copy)]
struct UniqueMembers<'a> {
    /// Set when a repeated name is what stopped the walk.
    repeated: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for UniqueMembers<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueMembers<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
        let mut names = HashSet::new();
        while let Some(name) = members.next_key::<String>()? {
            if !names.insert(name) {
                self.repeated.set(true);
                return Err(de::Error::custom("an object names a member twice"));
            }
            members.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_once_at_every_depth() {
        for json in [
            r#"{}"#,
            r#"{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}"#,
            r#"[1,"x",null,true,-1,1.5e300,{"a":{"b":[]}}]"#,
            r#"{"sub":"a","Sub":"b"}"#,
        ] {
            assert_eq!(check_unique_members(json.as_bytes()), Ok(()), "{json}");
        }
        for json in [
            r#"{"sub":"a","sub":"b"}"#,
            r#"{"sub":"a","s\u0075b":"b"}"#,
            r#"{"x":{"y":1,"y":1}}"#,
            r#"{"x":[0,{"y":1,"y":2}]}"#,
            r#"[{"a":1,"a":1}]"#,
        ] {
            assert_eq!(
                check_unique_members(json.as_bytes()),
                Err(NotAccepted::Repeated),
                "{json}"
            );
        }
        for json in [
            "",
            "{",
            r#"{"a":1}x"#,
            r#"{"a":1,}"#,
            "nul",
            &"[".repeat(200),
        ] {
            assert_eq!(
                check_unique_members(json.as_bytes()),
                Err(NotAccepted::NotJson),
                "{json}"
            );
        }
    }
}
