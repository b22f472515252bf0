//! Leaving nothing behind when the harness is interrupted.
//!
//! Named objects (a bus segment, a message queue) exist only between their
//! creation and the moment every peer has opened them, when the harness
//! unlinks them. If SIGINT, SIGTERM or SIGHUP arrives inside such a window,
//! the handler unlinks whatever is named at that moment and exits. Peer
//! processes die with the harness (PR_SET_PDEATHSIG).

use std::ffi::CString;

use std::sync::atomic::{AtomicPtr, Ordering};

/// The shm_open names of the segments that exist right now, if any: a
/// bus's, or a peer's rings (two for a ping-pong).
static SEGMENTS: [AtomicPtr<libc::c_char>; 2] = [
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
];
/// The names of message queues that exist right now, if any.
static QUEUES: [AtomicPtr<libc::c_char>; 2] = [
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
];

extern "C" fn on_signal(signal: libc::c_int) {
    for segment in &SEGMENTS {
        let name = segment.load(Ordering::Acquire);
        if !name.is_null() {
            // SAFETY: a NUL-terminated name leaked by `named_shm`, never
            // freed; shm_unlink is async-signal-safe.
            unsafe { libc::shm_unlink(name) };
        }
    }
    for queue in &QUEUES {
        let name = queue.load(Ordering::Acquire);
        if !name.is_null() {
            // SAFETY: as above; mq_unlink is a plain system call.
            unsafe { libc::mq_unlink(name) };
        }
    }
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + signal) };
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` only does async-signal-safe things; sigaction
        // copies the struct.
        unsafe {
            let mut action: libc::sigaction = core::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, core::ptr::null_mut());
        }
    }
}

fn leak(name: &str) -> *mut libc::c_char {
    CString::new(name).expect("no NUL in names").into_raw()
}

/// Records that the segment of bus `bus` exists (until `unnamed_segment`).
pub fn named_segment(bus: &str) {
    named_shm(0, &format!("/shmbus.{bus}"));
}

/// Records that the shared-memory object `name` (shm_open's name, with
/// its leading slash; slot 0 or 1) exists, until `unnamed_segment`.
pub fn named_shm(slot: usize, name: &str) {
    SEGMENTS[slot].store(leak(name), Ordering::Release);
}

pub fn unnamed_segment() {
    for segment in &SEGMENTS {
        segment.store(core::ptr::null_mut(), Ordering::Release);
    }
}

/// Records that message queue `name` (slot 0 or 1) exists.
pub fn named_queue(slot: usize, name: &str) {
    QUEUES[slot].store(leak(name), Ordering::Release);
}

pub fn unnamed_queues() {
    for queue in &QUEUES {
        queue.store(core::ptr::null_mut(), Ordering::Release);
    }
}
