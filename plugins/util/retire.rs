// SPDX-License-Identifier: MPL-2.0
//! Dropping on a thread of its own: freeing an ONNX Runtime session takes milliseconds, which
//! the streaming thread must not spend. One thread for the process, started on first use; if
//! it cannot be started, things are dropped where they are.

use std::sync::{LazyLock, Mutex};

/// Where things to drop are sent.
type Retirer = Mutex<std::sync::mpsc::Sender<Box<dyn Send>>>;

/// Drops models (and anything else) on a thread of its own.
pub fn retire(thing: impl Send + 'static) {
    static RETIRE: LazyLock<Option<Retirer>> = LazyLock::new(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn Send>>();
        std::thread::Builder::new()
            .name("onnxinfer-retire".into())
            .spawn(move || {
                for thing in rx {
                    drop(thing);
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    match RETIRE.as_ref() {
        Some(tx) => {
            let _ = tx.lock().unwrap().send(Box::new(thing));
        }
        None => drop(thing),
    }
}
