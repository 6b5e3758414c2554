//! ISO 4217 currencies: the alphabetic code, the numeric code carried in
//! `CE`, and the number of minor-unit digits (for amounts shown to people).

pub struct Currency {
    pub alpha: &'static str,
    pub numeric: u16,
    pub exponent: u8,
}

/// Currencies a French terminal may meet (EUR and the CFP franc of the
/// overseas territories first), then the common ones of neighbouring and
/// tourist markets.
static TABLE: &[Currency] = &[
    Currency {
        alpha: "EUR",
        numeric: 978,
        exponent: 2,
    },
    Currency {
        alpha: "XPF",
        numeric: 953,
        exponent: 0,
    },
    Currency {
        alpha: "USD",
        numeric: 840,
        exponent: 2,
    },
    Currency {
        alpha: "GBP",
        numeric: 826,
        exponent: 2,
    },
    Currency {
        alpha: "CHF",
        numeric: 756,
        exponent: 2,
    },
    Currency {
        alpha: "JPY",
        numeric: 392,
        exponent: 0,
    },
    Currency {
        alpha: "CAD",
        numeric: 124,
        exponent: 2,
    },
    Currency {
        alpha: "AUD",
        numeric: 36,
        exponent: 2,
    },
    Currency {
        alpha: "CNY",
        numeric: 156,
        exponent: 2,
    },
    Currency {
        alpha: "DKK",
        numeric: 208,
        exponent: 2,
    },
    Currency {
        alpha: "SEK",
        numeric: 752,
        exponent: 2,
    },
    Currency {
        alpha: "NOK",
        numeric: 578,
        exponent: 2,
    },
    Currency {
        alpha: "PLN",
        numeric: 985,
        exponent: 2,
    },
    Currency {
        alpha: "CZK",
        numeric: 203,
        exponent: 2,
    },
    Currency {
        alpha: "HUF",
        numeric: 348,
        exponent: 2,
    },
    Currency {
        alpha: "RON",
        numeric: 946,
        exponent: 2,
    },
    Currency {
        alpha: "MAD",
        numeric: 504,
        exponent: 2,
    },
    Currency {
        alpha: "TND",
        numeric: 788,
        exponent: 3,
    },
    Currency {
        alpha: "DZD",
        numeric: 12,
        exponent: 2,
    },
    Currency {
        alpha: "XOF",
        numeric: 952,
        exponent: 0,
    },
    Currency {
        alpha: "XAF",
        numeric: 950,
        exponent: 0,
    },
    Currency {
        alpha: "MUR",
        numeric: 480,
        exponent: 2,
    },
    Currency {
        alpha: "MGA",
        numeric: 969,
        exponent: 2,
    },
    Currency {
        alpha: "HKD",
        numeric: 344,
        exponent: 2,
    },
    Currency {
        alpha: "SGD",
        numeric: 702,
        exponent: 2,
    },
    Currency {
        alpha: "AED",
        numeric: 784,
        exponent: 2,
    },
    Currency {
        alpha: "BRL",
        numeric: 986,
        exponent: 2,
    },
    Currency {
        alpha: "INR",
        numeric: 356,
        exponent: 2,
    },
    Currency {
        alpha: "KRW",
        numeric: 410,
        exponent: 0,
    },
    Currency {
        alpha: "TRY",
        numeric: 949,
        exponent: 2,
    },
    Currency {
        alpha: "ILS",
        numeric: 376,
        exponent: 2,
    },
    Currency {
        alpha: "ZAR",
        numeric: 710,
        exponent: 2,
    },
    Currency {
        alpha: "MXN",
        numeric: 484,
        exponent: 2,
    },
    Currency {
        alpha: "NZD",
        numeric: 554,
        exponent: 2,
    },
    Currency {
        alpha: "ISK",
        numeric: 352,
        exponent: 0,
    },
    Currency {
        alpha: "KWD",
        numeric: 414,
        exponent: 3,
    },
    Currency {
        alpha: "BHD",
        numeric: 48,
        exponent: 3,
    },
];

pub fn by_numeric(n: u16) -> Option<&'static Currency> {
    TABLE.iter().find(|c| c.numeric == n)
}

/// Accepts `978`, `EUR` or `eur`. A three-digit code not in the table is
/// still accepted (the terminal need not know every currency to echo it).
pub fn parse(s: &str) -> Option<u16> {
    if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    TABLE
        .iter()
        .find(|c| c.alpha.eq_ignore_ascii_case(s))
        .map(|c| c.numeric)
}

/// The alphabetic code, or the numeric one written on three digits.
pub fn label(n: u16) -> String {
    match by_numeric(n) {
        Some(c) => c.alpha.to_string(),
        None => format!("{n:03}"),
    }
}

pub fn exponent(n: u16) -> u8 {
    by_numeric(n).map(|c| c.exponent).unwrap_or(2)
}

/// `1234` minor units of EUR -> `12,34` (French notation when `comma`).
pub fn format_amount(minor: u64, currency: u16, comma: bool) -> String {
    let exp = u32::from(exponent(currency));
    if exp == 0 {
        return minor.to_string();
    }
    let div = 10u64.pow(exp);
    let sep = if comma { ',' } else { '.' };
    format!("{}{sep}{:0w$}", minor / div, minor % div, w = exp as usize)
}

/// `12.34`, `12,34`, `12` -> minor units; `None` for anything else or for
/// more decimals than the currency has.
pub fn parse_amount(s: &str, currency: u16) -> Option<u64> {
    let exp = usize::from(exponent(currency));
    let (int, frac) = match s.find(['.', ',']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() && frac.is_empty() || !digits(int) || !digits(frac) || frac.len() > exp {
        return None;
    }
    let mut v: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    for _ in 0..exp {
        v = v.checked_mul(10)?;
    }
    let mut f: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..exp {
        f *= 10;
    }
    v.checked_add(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(parse("EUR"), Some(978));
        assert_eq!(parse("eur"), Some(978));
        assert_eq!(parse("978"), Some(978));
        assert_eq!(parse("999"), Some(999));
        assert_eq!(parse("EURO"), None);
        assert_eq!(label(978), "EUR");
        assert_eq!(label(999), "999");
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("12.34", 978), Some(1234));
        assert_eq!(parse_amount("12,3", 978), Some(1230));
        assert_eq!(parse_amount("0.05", 978), Some(5));
        assert_eq!(parse_amount("12", 978), Some(1200));
        assert_eq!(parse_amount("1500", 953), Some(1500));
        assert_eq!(parse_amount("1.5", 953), None);
        assert_eq!(parse_amount("1.234", 978), None);
        assert_eq!(parse_amount("", 978), None);
        assert_eq!(parse_amount("-1", 978), None);
        assert_eq!(parse_amount("99999999999999999999", 978), None);
        assert_eq!(format_amount(1234, 978, true), "12,34");
        assert_eq!(format_amount(5, 978, false), "0.05");
        assert_eq!(format_amount(1500, 953, false), "1500");
    }
}
