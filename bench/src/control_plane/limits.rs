//! Open files: every simulated proxy holds a socket in this process, and the controller (which
//! inherits this process's limits) holds one per proxy, so the soft `RLIMIT_NOFILE` is raised
//! towards the hard one before anything starts. A hard limit too low is a clear error.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Sockets and files besides the proxies' (logs, the runtime, the controller's listeners).
const SPARE: u64 = 512;

/// Makes sure `proxies` streams fit in this process and the controller; returns the soft limit
/// now in force.
pub fn raise_nofile(proxies: usize) -> anyhow::Result<u64> {
    let need = proxies as u64 + SPARE;
    let now = getrlimit(Resource::Nofile);
    let soft = now.current.unwrap_or(u64::MAX);
    if soft >= need {
        return Ok(soft);
    }
    let hard = now.maximum.unwrap_or(u64::MAX);
    if hard < need {
        anyhow::bail!(
            "{proxies} simulated proxies need at least {need} open files, but the hard limit is {hard}: \
             raise it (e.g. `ulimit -Hn {need}` as root, or LimitNOFILE= for a service) and run again"
        );
    }
    setrlimit(Resource::Nofile, Rlimit { current: Some(need), maximum: now.maximum })
        .map_err(|e| anyhow::anyhow!("raising the open-file limit to {need}: {e}"))?;
    Ok(need)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_need_is_met_and_an_impossible_one_is_a_clear_error() {
        assert!(raise_nofile(10).unwrap() >= 10 + SPARE);
        let hard = getrlimit(Resource::Nofile).maximum;
        if let Some(hard) = hard.filter(|h| *h < u64::MAX / 2) {
            let err = raise_nofile(hard as usize).unwrap_err().to_string();
            assert!(err.contains("hard limit"), "{err}");
        }
    }
}
