//! The two ways a request comes in, named as the log, the journal and a
//! payment program (`CONCERT_CHANNEL`) write them.

use std::fmt;

/// The way a request came: a TCP connection or the serial line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Tcp,
    Serial,
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Tcp => "tcp",
            Channel::Serial => "serial",
        })
    }
}

impl Channel {
    /// The channel a journal record names, as `Display` wrote it.
    pub fn from_name(name: &str) -> Option<Channel> {
        match name {
            "tcp" => Some(Channel::Tcp),
            "serial" => Some(Channel::Serial),
            _ => None,
        }
    }
}
