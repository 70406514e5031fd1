//! Who holds a role, and whether that process is still alive.
//!
//! A role is held by writing an owner word into the header with a
//! compare-and-swap: the holder's pid in the low [`OWNER_PID_BITS`] bits and
//! its start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`)
//! above them. A pid alone is not enough, because the kernel reuses pids;
//! the pair (pid, start time) names one process for the life of the machine.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::constants::{OWNER_PID_BITS, OWNER_START_TICKS_BITS};
use crate::error::{Error, Result, Role};

/// What the holder of a role is doing, as seen from the other side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Nobody holds the role and nobody closed it: not started yet.
    Absent,
    /// A live process holds the role.
    Alive,
    /// The process that held the role has exited without closing.
    Dead,
    /// The last holder closed cleanly and released the role.
    Closed,
}

impl PeerState {
    /// The state's name, as used by the Python API.
    pub fn name(self) -> &'static str {
        match self {
            PeerState::Absent => "absent",
            PeerState::Alive => "alive",
            PeerState::Dead => "dead",
            PeerState::Closed => "closed",
        }
    }
}

const PID_MASK: u64 = (1 << OWNER_PID_BITS) - 1;
const START_TICKS_MASK: u64 = (1 << OWNER_START_TICKS_BITS) - 1;

/// Packs a pid and start time into an owner word (never 0: pids start at 1).
pub(crate) fn owner_word(pid: u32, start_ticks: u64) -> u64 {
    u64::from(pid) & PID_MASK | (start_ticks & START_TICKS_MASK) << OWNER_PID_BITS
}

/// The pid in an owner word.
pub(crate) fn owner_pid(word: u64) -> u32 {
    (word & PID_MASK) as u32
}

/// What `/proc/<pid>/stat` says about a process.
struct ProcStat {
    state: u8,
    start_ticks: u64,
}

fn read_proc_stat(pid: &str) -> std::io::Result<ProcStat> {
    let text = std::fs::read(format!("/proc/{pid}/stat"))?;
    parse_proc_stat(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected format in /proc/{pid}/stat"),
        )
    })
}

/// Parses the state (field 3) and start time (field 22) of a stat line. The
/// command name (field 2) is in parentheses and may itself hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn parse_proc_stat(text: &[u8]) -> Option<ProcStat> {
    let close = text.iter().rposition(|&byte| byte == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    // Fields 4 to 21 lie between the state and the start time.
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

/// This process's owner word.
pub(crate) fn own_owner_word() -> Result<u64> {
    let pid = std::process::id();
    let stat = read_proc_stat("self").map_err(|source| Error::Io {
        action: "read this process's start time from",
        path: "/proc/self/stat".into(),
        source,
    })?;
    if u64::from(pid) > PID_MASK {
        return Err(Error::InvalidArgument(format!(
            "pid {pid} is above the 2^{OWNER_PID_BITS} the ring header can store"
        )));
    }
    Ok(owner_word(pid, stat.start_ticks))
}

/// Whether the process named by a non-zero owner word is still running.
/// A zombie (exited, not yet reaped) counts as dead, and so does a live
/// process with the same pid but another start time (a reused pid).
pub(crate) fn holder_alive(word: u64) -> bool {
    let pid = owner_pid(word);
    if pid == 0 {
        return false;
    }
    match read_proc_stat(&pid.to_string()) {
        Ok(stat) => {
            let exited = matches!(stat.state, b'Z' | b'X' | b'x');
            let same_process = stat.start_ticks & START_TICKS_MASK == word >> OWNER_PID_BITS;
            !exited && same_process
        }
        // If /proc cannot be read for another reason than "no such process",
        // assume the holder is alive: declaring a live peer dead is worse.
        Err(error) => error.kind() != std::io::ErrorKind::NotFound,
    }
}

/// The state of the role whose owner word and closed flag are given.
pub(crate) fn peer_state(owner: &AtomicU64, closed: &AtomicU64) -> (PeerState, u32) {
    let word = owner.load(Ordering::Acquire);
    if word != 0 {
        let state = if holder_alive(word) {
            PeerState::Alive
        } else {
            PeerState::Dead
        };
        return (state, owner_pid(word));
    }
    if closed.load(Ordering::Acquire) != 0 {
        (PeerState::Closed, 0)
    } else {
        (PeerState::Absent, 0)
    }
}

/// Claims a role for this process: takes it when free, or replaces a holder
/// that has died. Clears the role's closed flag.
pub(crate) fn claim(owner: &AtomicU64, closed: &AtomicU64, role: Role, me: u64) -> Result<()> {
    loop {
        let current = owner.load(Ordering::Acquire);
        if current != 0 && (current == me || holder_alive(current)) {
            return Err(Error::RoleTaken {
                role,
                pid: owner_pid(current),
            });
        }
        if owner
            .compare_exchange(current, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            closed.store(0, Ordering::Release);
            return Ok(());
        }
    }
}

/// Releases a role held by `me`; if someone else took it over (having judged
/// this process dead), leaves it to them. `mark_closed` records a clean close
/// for the other side to see.
pub(crate) fn release(owner: &AtomicU64, closed: &AtomicU64, me: u64, mark_closed: bool) {
    if owner.load(Ordering::Acquire) == me {
        if mark_closed {
            closed.store(1, Ordering::Release);
        }
        let _ = owner.compare_exchange(me, 0, Ordering::AcqRel, Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_whose_name_holds_parentheses() {
        let line =
            b"4242 (evil) name) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21\n";
        let stat = parse_proc_stat(line).expect("parses");
        assert_eq!(stat.state, b'S');
        assert_eq!(stat.start_ticks, 987654);
    }

    #[test]
    fn rejects_a_truncated_stat_line() {
        assert!(parse_proc_stat(b"4242 (x) S 1 2 3").is_none());
        assert!(parse_proc_stat(b"no parenthesis").is_none());
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = own_owner_word().expect("reads /proc/self/stat");
        assert_eq!(owner_pid(me), std::process::id());
        assert!(holder_alive(me));
        let reused_pid = me ^ (1 << OWNER_PID_BITS);
        assert!(!holder_alive(reused_pid));
    }

    #[test]
    fn an_exited_and_reaped_child_is_dead() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawns true");
        let pid = child.id();
        child.wait().expect("reaps the child");
        // Any start time will do: the pid no longer exists (barring reuse
        // within these microseconds, which the start time also catches).
        assert!(!holder_alive(owner_word(pid, 0)));
    }

    #[test]
    fn claim_refuses_a_live_holder_and_replaces_a_dead_one() {
        let owner = AtomicU64::new(0);
        let closed = AtomicU64::new(1);
        let me = own_owner_word().unwrap();
        claim(&owner, &closed, Role::Producer, me).unwrap();
        assert_eq!(closed.load(Ordering::Relaxed), 0);
        assert!(matches!(
            claim(&owner, &closed, Role::Producer, me),
            Err(Error::RoleTaken { .. })
        ));
        owner.store(me ^ (1 << OWNER_PID_BITS), Ordering::Relaxed);
        claim(&owner, &closed, Role::Producer, me).unwrap();
        assert_eq!(owner.load(Ordering::Relaxed), me);
        release(&owner, &closed, me, true);
        assert_eq!(owner.load(Ordering::Relaxed), 0);
        assert_eq!(peer_state(&owner, &closed).0, PeerState::Closed);
    }
}
