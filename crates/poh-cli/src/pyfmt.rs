//! Output in the prototype's exact bytes: Python's `json.dumps` of a tx and of strings,
//! Python's `repr` of floats and of `str`s (for `Expired: ['a', 'b']`), so scripts written
//! against the prototype see the same output.

use std::fmt::Write as _;

use poh_types::Tx;

/// The tx as the prototype printed it: Python's `json.dumps` of
/// `{"tx_id", "holder_id", "timestamp", "payload"}`.
pub fn prototype_tx_json(tx: &Tx) -> String {
    let w = tx.to_wire();
    format!(
        "{{\"tx_id\": {}, \"holder_id\": {}, \"timestamp\": {}, \"payload\": {}}}",
        py_json_str(&w.tx_id),
        py_json_str(&w.holder_id),
        py_float_repr(w.timestamp),
        py_json_str(&w.payload)
    )
}

/// A JSON string as Python's `json.dumps` writes it (non-ASCII as `\uXXXX`).
pub fn py_json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7f => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A float as Python's `repr` writes it: shortest round-trip digits, fixed notation for
/// decimal exponents from -4 to 15, otherwise `d.ddde±XX`.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.7000000005e9".
    let sci = format!("{:e}", x.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    let sign = if x < 0.0 { "-" } else { "" };
    let decpt = exp + 1; // x = 0.DIGITS * 10^decpt
    let n = digits.len() as i32;
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-decpt) as usize))
        } else if decpt >= n {
            format!("{sign}{digits}{}.0", "0".repeat((decpt - n) as usize))
        } else {
            let (a, b) = digits.split_at(decpt as usize);
            format!("{sign}{a}.{b}")
        }
    } else {
        let (a, b) = digits.split_at(1);
        let frac = if b.is_empty() {
            String::new()
        } else {
            format!(".{b}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{a}{frac}e{esign}{:02}", exp.abs())
    }
}

/// `s` as Python's `repr()` prints a `str`: single quotes unless the text holds a single
/// quote and no double quote; backslash, the quote and control characters escaped.
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                let n = u32::from(c);
                let _ = match n {
                    0..=0xff => write!(out, "\\x{n:02x}"),
                    0x100..=0xffff => write!(out, "\\u{n:04x}"),
                    _ => write!(out, "\\U{n:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        // Expected values are Python 3's repr() of the same floats.
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1_700_000_000.5, "1700000000.5"),
            (1_700_000_000.0, "1700000000.0"),
            (123.456, "123.456"),
            (1e11, "100000000000.0"),
            (0.1, "0.1"),
            (5e-324, "5e-324"),
            (1.5e-7, "1.5e-07"),
            (12_345_678_901_234_567.0, "1.2345678901234568e+16"),
            (-2.5, "-2.5"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float_repr(*x), *want, "{x:e}");
        }
    }

    #[test]
    fn strings_print_like_python_json_dumps() {
        assert_eq!(py_json_str("a-b.c_1"), r#""a-b.c_1""#);
        assert_eq!(py_json_str("é\"\\\n\u{1}"), r#""\u00e9\"\\\n\u0001""#);
        assert_eq!(py_json_str("😀"), r#""\ud83d\ude00""#);
        assert_eq!(py_json_str("\u{7f}"), "\"\u{7f}\"");
    }

    #[test]
    fn py_repr_quotes_like_python() {
        assert_eq!(py_repr("tx-1.b_2"), "'tx-1.b_2'");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(py_repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(py_repr("back\\slash"), "'back\\\\slash'");
        assert_eq!(py_repr("nl\nx\u{1}"), "'nl\\nx\\x01'");
        assert_eq!(py_repr("é"), "'é'");
    }
}
