//! `weft-test-pause`: what a pod's pause container runs — nothing, forever, so that the pod's
//! network namespace outlives its other containers. Stopped with SIGKILL (`docker rm -f`).
#![forbid(unsafe_code)]

fn main() {
    loop {
        std::thread::park();
    }
}
