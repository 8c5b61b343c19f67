//! Parsing of Kubernetes resource quantities (`250m`, `1.5Gi`, `1e3`) into milli-units.

use thiserror::Error;

/// A quantity string that is not in the Kubernetes quantity grammar.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid quantity {0:?}: expected a number with an optional suffix such as 250m, 2Gi, 1e3")]
pub struct InvalidQuantity(pub String);

/// Parses a quantity into thousandths of its unit, rounding up as the API server does when it
/// canonicalizes, and saturating at the bounds of `i64` (a 2^63 milli-byte memory is far larger
/// than any node).
pub fn parse_milli(text: &str) -> Result<i64, InvalidQuantity> {
    let invalid = || InvalidQuantity(text.to_string());
    let trimmed = text.trim();
    let (negative, unsigned) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };

    let number_end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(invalid());
    }

    // The number as digits / 10^scale, accumulated without allocating.
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let mut mantissa: i128 = 0;
    let mut significant = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        if mantissa == 0 && digit == b'0' {
            continue;
        }
        significant += 1;
        if significant > 30 {
            return Ok(saturate(negative));
        }
        mantissa = mantissa * 10 + i128::from(digit - b'0');
    }
    let mut scale = fraction.len() as i32;

    // Multiplier from the suffix: (factor, extra decimal exponent).
    let (factor, exponent): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().map_err(|_| invalid())?;
            if !(-64..=64).contains(&exp) {
                return Err(invalid());
            }
            (1, exp)
        }
        _ => return Err(invalid()),
    };

    // milli = mantissa * factor * 10^(exponent + 3) / 10^scale, rounded away from zero.
    scale -= exponent + 3;
    let Some(mut value) = mantissa.checked_mul(factor) else {
        return Ok(saturate(negative));
    };
    if scale < 0 {
        for _ in 0..-scale {
            match value.checked_mul(10) {
                Some(v) => value = v,
                None => return Ok(saturate(negative)),
            }
        }
    } else if scale > 0 {
        let divisor = 10_i128.checked_pow(scale as u32);
        value = match divisor {
            Some(d) => (value + d - 1) / d,
            None => i128::from(value != 0),
        };
    }

    let value = if negative { -value } else { value };
    Ok(value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

fn saturate(negative: bool) -> i64 {
    if negative { i64::MIN } else { i64::MAX }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_to_milli_units() {
        let cases = [
            ("1", 1000),
            ("250m", 250),
            ("0.5", 500),
            ("1.5Gi", 1_610_612_736_000),
            ("64Gi", 68_719_476_736_000),
            ("1Ki", 1_024_000),
            ("2k", 2_000_000),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("100n", 1),
            ("0", 0),
            ("-1", -1000),
            ("8", 8000),
            ("16266544Ki", 16_656_941_056_000),
        ];
        for (text, want) in cases {
            assert_eq!(parse_milli(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn enormous_quantities_saturate_instead_of_overflowing() {
        assert_eq!(parse_milli("100Ei"), Ok(i64::MAX));
        assert_eq!(
            parse_milli("99999999999999999999999999999999999"),
            Ok(i64::MAX)
        );
    }

    #[test]
    fn malformed_quantities_are_rejected() {
        for text in ["", "Gi", "1.2.3", "1Gb", "abc", "1e", "1e999", "."] {
            assert!(parse_milli(text).is_err(), "{text}");
        }
    }
}
