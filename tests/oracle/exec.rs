//! The payment program of the exec runs: a shell script that keeps the
//! truth. It decides from the amount (the simulator's table, so that the
//! same plans mean the same on every backend), follows the contract of
//! concertd-exec.7 (ATTEMPTED=1 before money may move), and
//! appends its ledger line before it prints its outcome. The harness
//! arms a fault for the next transaction in the file `fault`.

use std::io::Write;
use std::path::{Path, PathBuf};

pub struct PayProgram {
    pub dir: PathBuf,
}

const SCRIPT: &str = r#"#!/bin/sh
D='@DIR@'
f=
if [ -e "$D/fault" ]; then f=$(cat "$D/fault"); rm -f "$D/fault"; fi
echo ATTEMPTED=1
a=$CONCERT_AMOUNT
op=$CONCERT_OPERATION
r=$CONCERT_REGISTER
case "$op" in
debit|deferred-debit|credit|cancel) ;;
*) echo AE=01; echo AF=12; exit 0 ;;
esac
of=-
charged=$a
ok=yes
af=
case "$op" in
cancel)
	lid=; lamt=
	if [ -e "$D/last-$r" ]; then read lid lamt < "$D/last-$r"; fi
	if [ -z "$lid" ] || [ "$lamt" != "$a" ]; then ok=no; af=04; else of=$lid; fi ;;
*)
	case "$a" in
	*51) ok=no; af=04 ;;
	*52) ok=no; af=05 ;;
	*53) ok=no; af=06 ;;
	*55) ok=no; af=08 ;;
	*56) ok=no; af=02 ;;
	*57) if [ "$CONCERT_PARTIAL_OK" = 1 ]; then charged=$((a / 2)); else ok=no; af=04; fi ;;
	esac ;;
esac
if [ $ok = yes ]; then
	echo "performed $CONCERT_ID $op $r $charged ${CONCERT_REFUND_OF:--} $of $CONCERT_FRAME" >> "$D/ledger"
	case "$op" in
	debit|deferred-debit) echo "$CONCERT_ID $charged" > "$D/last-$r" ;;
	cancel) rm -f "$D/last-$r" ;;
	esac
else
	echo "declined $CONCERT_ID $op $r 0 ${CONCERT_REFUND_OF:--} - $CONCERT_FRAME" >> "$D/ledger"
fi
case "$f" in
die) kill -9 $$ ;;
slow) sleep 5 ;;
gate) read go < "$D/gate" ;;
esac
if [ $ok = yes ]; then
	case "$a" in
	# Charged, and the application itself does not know: unknown.
	*54) echo AE=01; echo AF=07; exit 0 ;;
	esac
	echo AE=10
	echo "AC=${CONCERT_ID#???????}"
	echo "AA=497010######0674"
	[ "$charged" != "$a" ] && echo "CB=$charged"
else
	echo AE=01
	echo "AF=$af"
fi
exit 0
"#;

impl PayProgram {
    pub fn new(dir: &Path) -> PayProgram {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("pay.sh");
        std::fs::write(&script, SCRIPT.replace("@DIR@", &dir.display().to_string())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fifo = dir.join("gate");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo(3) on a path this harness owns.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        PayProgram {
            dir: dir.to_path_buf(),
        }
    }

    pub fn terminal(&self) -> String {
        format!("terminal exec {}\n", self.dir.join("pay.sh").display())
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.dir.join("ledger")
    }

    /// Arms a fault (die, slow, gate) for the next transaction.
    pub fn arm(&self, what: &str) {
        std::fs::write(self.dir.join("fault"), what).unwrap();
    }

    pub fn disarm(&self) {
        let _ = std::fs::remove_file(self.dir.join("fault"));
    }

    /// Lets a program held on the gate go on (one whose concertd was
    /// killed prints to nobody); false when none holds it open yet.
    /// Never blocks.
    pub fn try_release(&self) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.dir.join("gate"))
        {
            Ok(mut f) => {
                let _ = f.write_all(b"go\n");
                true
            }
            Err(_) => false,
        }
    }
}
