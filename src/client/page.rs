//! Paging through the caller's sessions: which page to ask for, and what one page holds.

use http::{header, HeaderMap};
use reqwest::Url;

use crate::session::Session;

/// The most sessions one page may ask for: Kratos's own limit for `page_size`.
pub const MAX_PAGE_SIZE: u16 = 500;

/// Which page of the caller's sessions to list ([`list_sessions`]).
///
/// [`list_sessions`]: crate::lifecycle::SessionLifecycle::list_sessions
///
/// ```
/// use tower_kratos::lifecycle::Page;
///
/// let first = Page::first().with_size(20);
/// assert_eq!(first.size(), Some(20));
/// assert_eq!(first.token(), None);
/// assert_eq!(Page::first().with_size(10_000).size(), Some(500));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    size: Option<u16>,
    token: Option<String>,
}

impl Page {
    /// The first page, of Kratos's default size (250).
    pub fn first() -> Self {
        Self::default()
    }

    /// This many sessions per page, clamped to `1..=500` as Kratos clamps it.
    pub fn with_size(mut self, size: u16) -> Self {
        self.size = Some(size.clamp(1, MAX_PAGE_SIZE));
        self
    }

    /// The page Kratos's `page_token` names (from an earlier [`SessionList::next`], say after a
    /// round trip through your own API's pagination). The token is opaque; it is sent as a
    /// query parameter, encoded, and never shapes the URL otherwise.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.token = (!token.is_empty()).then_some(token);
        self
    }

    /// The page size asked for, if set.
    pub fn size(&self) -> Option<u16> {
        self.size
    }

    /// Kratos's opaque token for this page (none for the first page).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// One page of the caller's other active sessions, newest first, as `GET /sessions` lists them.
/// The session the request was made with is never in it (Kratos leaves it out).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionList {
    /// The sessions on this page.
    pub sessions: Vec<Session>,
    /// How many there are on all pages (Kratos's `X-Total-Count`), when Kratos said.
    pub total: Option<u64>,
    /// The next page, when there is one (from Kratos's `Link` header).
    pub next: Option<Page>,
}

/// The `rel="next"` page of a `Link` header. Only its `page_token` (and `page_size`) are taken:
/// the URL itself is never followed.
pub(super) fn next_page(headers: &HeaderMap, size: Option<u16>) -> Option<Page> {
    let base = Url::parse("http://link.invalid/").ok()?;
    for value in headers.get_all(header::LINK) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for link in text.split(',') {
            let Some((target, params)) = link.split_once(';') else {
                continue;
            };
            let is_next = params.split(';').any(|param| {
                let param = param.trim();
                param.eq_ignore_ascii_case("rel=\"next\"") || param.eq_ignore_ascii_case("rel=next")
            });
            let target = target.trim();
            let Some(target) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
                continue;
            };
            if !is_next {
                continue;
            }
            let Ok(url) = base.join(target) else {
                continue;
            };
            let mut next = Page { size, token: None };
            for (key, value) in url.query_pairs() {
                match key.as_ref() {
                    "page_token" if !value.is_empty() => next.token = Some(value.into_owned()),
                    "page_size" => {
                        if let Ok(parsed) = value.parse::<u16>() {
                            next.size = Some(parsed.clamp(1, MAX_PAGE_SIZE));
                        }
                    }
                    _ => {}
                }
            }
            return next.token.is_some().then_some(next);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn the_next_page_comes_from_the_link_header_only() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LINK,
            HeaderValue::from_static(
                "<http://k/sessions?page=0&page_size=2&page_token=0&per_page=2>; rel=\"first\",\
                 <http://k/sessions?page=1&page_size=2&page_token=2&per_page=2>; rel=\"next\",\
                 <http://k/sessions?page=2&page_size=2&page_token=4&per_page=2>; rel=\"last\"",
            ),
        );
        let next = next_page(&headers, Some(2)).unwrap();
        assert_eq!((next.token(), next.size()), (Some("2"), Some(2)));
        headers.insert(
            header::LINK,
            HeaderValue::from_static("<http://k/sessions?page_token=0>; rel=\"first\""),
        );
        assert!(next_page(&headers, None).is_none());
        for garbage in ["", "nonsense", "<>; rel=next", "<::>; rel=\"next\""] {
            headers.insert(header::LINK, HeaderValue::from_static(garbage));
            assert!(next_page(&headers, None).is_none(), "{garbage:?}");
        }
    }
}
