//! Stage 7: many debits with a 24 h retry window and a small
//! journal-size: rotations follow the new records, not the carried ones.

use crate::daemon::{start_in, subdir};
use crate::report::Stage;
use crate::tcp::{check_approved, debit, exchange};
use crate::util::PATIENCE;
use std::path::Path;

/// Debits of the rotation stage, each its own CF: all in the retry window.
const ROTATION_TX: u64 = 1500;
const ROTATION_SIZE: u64 = 16 * 1024;

/// With a 24 h retry window every transaction is carried over at each
/// rotation, so the carried set soon outgrows a small journal-size. Each
/// debit appends about 500 bytes (begun, ended, delivered): one rotation
/// per journal-size of them, some 30 debits. More than one per 2 debits
/// means the carried records count toward journal-size again (before the
/// fix: more rotations than debits, each new file only carried records);
/// a journal file past 1.5 x journal-size plus a few records means the
/// carried set is not capped.
pub fn stage_rotation(root: &Path) -> Stage {
    let mut st = Stage::new("rotation", "rotation with a 24 h retry window");
    let dir = subdir(root, "rotation");
    let d = start_in(
        &dir,
        &format!(
            "simulator-delay 0\nretry-window 24h\njournal-size {ROTATION_SIZE}\njournal-keep 2"
        ),
    );
    let mut largest = 0;
    for i in 0..ROTATION_TX {
        // Ending in 00: approved, so held for replay.
        let amount = 1000 + 100 * (i % 50);
        let head = debit("01", amount);
        let req = format!("{head}CF010tx{i:08}");
        st.tried += 1;
        match exchange(d.addr, req.as_bytes(), false, PATIENCE) {
            Ok(a) => {
                if let Err(e) = check_approved(&head, &a) {
                    st.lose(format!("debit {i}: {e}"));
                }
                st.outcome(amount, &a, false);
            }
            Err(e) => st.lose(format!("debit {i}: no answer: {e}")),
        }
        if let Ok(m) = std::fs::metadata(dir.join("journal")) {
            largest = largest.max(m.len());
        }
    }
    let rotations = d.count_log(": rotated,") as u64;
    if rotations > ROTATION_TX / 2 {
        st.lose(format!(
            "{rotations} rotations for {ROTATION_TX} debits: carried records count again"
        ));
    }
    let bound = ROTATION_SIZE * 3 / 2 + 4096;
    if largest > bound {
        st.lose(format!(
            "journal grew to {largest} bytes, past {bound}: the carried set is not capped"
        ));
    }
    st.daemon_log(&d);
    st.fig("rotations", rotations);
    st.fig("transactions", ROTATION_TX);
    st.fig("journal_size", ROTATION_SIZE);
    st.fig("largest_journal_bytes", largest);
    st.summary = format!(
        "{rotations} rotations for {ROTATION_TX} debits (journal-size {}K), largest journal {largest} bytes",
        ROTATION_SIZE / 1024
    );
    st
}
