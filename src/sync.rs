//! The one place shmbus takes its atomics, fences, `UnsafeCell`, spin hint
//! and thread yield from.
//!
//! In a normal build they are `core`'s. Under `--cfg shmbus_loom` they are
//! loom's, so the model checker in `loom-tests/` sees every shared access the
//! algorithms in [`crate::ring`] and [`crate::wait`] make. No other file names
//! `core::sync::atomic`.
//!
//! It is also where the two halves of the *asymmetric fence* live
//! ([`light_fence`], [`heavy_fence`]), which let a writer that publishes at
//! a high rate skip the `fence(SeqCst)` of the wakeup check: see
//! "Light writers" in `crate::wait`.
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

#[cfg(not(shmbus_loom))]
mod asym {
    use core::sync::atomic::{compiler_fence, Ordering};
    use rustix::thread::{membarrier, MembarrierCommand};

    /// The light half: keeps the compiler from moving the loads after it
    /// above the stores before it; the CPU-level order comes from the
    /// reader's [`heavy_fence`]. Only a process for which
    /// [`register_light`] returned `true` may use it in place of
    /// `fence(SeqCst)`.
    #[inline(always)]
    pub fn light_fence() {
        compiler_fence(Ordering::SeqCst);
    }

    /// The heavy half: `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which
    /// returns only once every running thread of every registered process
    /// has passed a full memory barrier (threads not running pass one when
    /// they are switched out). `false` if the kernel or a seccomp filter
    /// refuses it: then the caller must not count on light writers.
    pub fn heavy_fence() -> bool {
        membarrier(MembarrierCommand::GlobalExpedited).is_ok()
    }

    /// Registers this process for [`heavy_fence`]'s barriers (idempotent,
    /// one system call), so that its writers may use [`light_fence`].
    /// `false` where the kernel or a seccomp filter refuses, or where
    /// `SHMBUS_MEMBARRIER=0` is set (the writers then fence on every
    /// message, as before: for measuring the difference, or for a system
    /// whose readers cannot call `membarrier`).
    pub fn register_light() -> bool {
        if std::env::var_os("SHMBUS_MEMBARRIER").is_some_and(|v| v == "0") {
            return false;
        }
        membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok()
    }
}

/// Under loom, the light half is a full `fence(SeqCst)` (loom has no
/// `membarrier`), so the models check the protocol that the asymmetric
/// fence stands in for; see "Light writers" in `crate::wait` for why the
/// two are equivalent.
#[cfg(shmbus_loom)]
mod asym {
    use loom::sync::atomic::{fence, Ordering};

    #[inline]
    pub fn light_fence() {
        fence(Ordering::SeqCst);
    }

    pub fn heavy_fence() -> bool {
        fence(Ordering::SeqCst);
        true
    }

    pub fn register_light() -> bool {
        true
    }
}

pub use asym::{heavy_fence, light_fence, register_light};

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
