//! interop-tests
