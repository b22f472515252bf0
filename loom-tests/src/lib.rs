//! Loom model checks of shmbus live in `tests/`. Run them with
//! `RUSTFLAGS="--cfg shmbus_loom" cargo test -p loom-tests --release`
//! (see the README for bounds).
