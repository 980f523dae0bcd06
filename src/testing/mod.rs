//! The Kratos stand-in.
