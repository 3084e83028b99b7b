// SPDX-License-Identifier: MPL-2.0
//! CPU time of the calling thread (what a streaming thread's work costs, without the time
//! other threads had the core).

use std::time::Duration;

/// CPU time of the calling thread: what `aggregate` costs, without the time other threads
/// had the core.
pub fn of_this_thread() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
