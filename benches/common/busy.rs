//! Busy competitors for the benchmarks' loaded runs.

/// Two processes that keep both cores busy while they live.
pub struct BusyHost(Vec<std::process::Child>);

impl BusyHost {
    pub fn start() -> Self {
        BusyHost(
            (0..2)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for BusyHost {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
