//! Opening a serial device with a character format, flow control and
//! read timeout: the one way both sides of the link (concertd's line and
//! the `concert -s` register, or a relay to a serial terminal) open it.

use crate::config::{Format, Parity as FormatParity};
use serialport::{DataBits, FlowControl, Parity, StopBits};
use std::time::Duration;

/// The settings of a port, to open it either way (boxed or native).
pub fn builder(
    path: &str,
    speed: u32,
    format: Format,
    rtscts: bool,
    timeout: Duration,
) -> serialport::SerialPortBuilder {
    let data = match format.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        _ => DataBits::Eight,
    };
    let parity = match format.parity {
        FormatParity::None => Parity::None,
        FormatParity::Even => Parity::Even,
        FormatParity::Odd => Parity::Odd,
    };
    let stop = if format.stop_bits == 2 {
        StopBits::Two
    } else {
        StopBits::One
    };
    let flow = if rtscts {
        FlowControl::Hardware
    } else {
        FlowControl::None
    };
    serialport::new(path, speed)
        .data_bits(data)
        .parity(parity)
        .stop_bits(stop)
        .flow_control(flow)
        .timeout(timeout)
}
