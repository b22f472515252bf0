//! The one place shmbus takes its atomics, fences, `UnsafeCell`, spin hint
//! and thread yield from.
//!
//! In a normal build they are `core`'s. Under `--cfg shmbus_loom` they are
//! loom's, so the model checker in `loom-tests/` sees every shared access the
//! algorithms in [`crate::ring`] and [`crate::wait`] make. No other file names
//! `core::sync::atomic`.
//!
//! The cfg is namespaced (`shmbus_loom`, not `loom`) so that turning it on does
//! not also change how our dependencies are compiled.

#[cfg(not(shmbus_loom))]
mod imp {
    pub use core::sync::atomic::{
        fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering,
    };

    /// Tells the CPU we are in a busy-wait loop.
    #[inline]
    pub fn spin_hint() {
        core::hint::spin_loop();
    }

    /// Gives the rest of this time slice to another thread.
    #[inline]
    pub fn yield_now() {
        std::thread::yield_now();
    }

    /// `core::cell::UnsafeCell` with loom's closure-based access shape, so
    /// code written against it runs unchanged under the model checker.
    #[derive(Debug, Default)]
    #[repr(transparent)]
    pub struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub const fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(value))
        }

        /// Runs `f` with a shared raw pointer to the contents.
        #[inline]
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Runs `f` with a mutable raw pointer to the contents.
        #[inline]
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(shmbus_loom)]
mod imp {
    pub use loom::cell::UnsafeCell;
    pub use loom::sync::atomic::{
        fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering,
    };

    /// Under loom a spin is a yield, so the model explores the other threads.
    #[inline]
    pub fn spin_hint() {
        loom::hint::spin_loop();
    }

    #[inline]
    pub fn yield_now() {
        loom::thread::yield_now();
    }
}

pub use imp::*;
