//! A failed append is all or nothing and stops the journal; a follower notices
//! when another writer reopened the journal under it. (A file of its own: it
//! changes the process's file-size limit.)

use sdi_exchange::{Command, Durability, Error, Follower, Journal, CASH};

fn limit_file_size(bytes: u64) {
    // SAFETY: plain libc calls on this process; SIGXFSZ is ignored so that a
    // write past the limit fails with EFBIG instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

#[test]
fn a_failed_append_is_cut_off_and_poisons_the_journal() {
    let dir = std::env::temp_dir().join(format!("sdi-journal-fail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("journal");
    let deposits: Vec<Command> = (0..10).map(|i| Command::deposit(0, CASH, 1 + i)).collect();

    let mut journal = Journal::open(&path, 7, Durability::Sync, |_| {}).expect("open");
    let mut follower = Follower::open(&path, 7).expect("follow");
    journal.append(&deposits).expect("first batch");
    assert_eq!(follower.poll(|_| {}).expect("poll"), 10);
    let good_length = std::fs::metadata(&path).expect("journal").len();

    // Room for three and a half more records: the next batch fails midway.
    limit_file_size(good_length + 220);
    let error = journal.append(&deposits).expect_err("the batch must fail");
    assert!(matches!(error, Error::Io { .. }), "{error}");
    assert_eq!(
        std::fs::metadata(&path).expect("journal").len(),
        good_length
    );
    let refused = journal.append(&deposits[..1]).expect_err("poisoned");
    assert!(matches!(refused, Error::Poisoned { .. }), "{refused}");
    limit_file_size(libc::RLIM_INFINITY);
    drop(journal);

    // A new writer: the replay holds only the acknowledged batch.
    let mut replayed = 0;
    let mut journal = Journal::open(&path, 7, Durability::Sync, |_| replayed += 1).expect("reopen");
    assert_eq!(replayed, 10);
    assert_eq!(journal.next_seq(), 11);
    journal.append(&deposits).expect("append after reopen");
    // The follower cannot know what the new writer cut: it says so.
    let error = follower.poll(|_| {}).expect_err("the follower must notice");
    assert!(
        error
            .to_string()
            .contains("another writer opened the journal"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
