//! Kubernetes quantity strings (`250m`, `1.5Gi`, `2e3`) parsed to thousandths, as the host does.

/// Parses a Kubernetes quantity into its value times 1000, rounded up and saturating at the bounds
/// of `i64` — the same scale as `resource.milli-value` in the contract.
///
/// Accepts an optional sign, a decimal number, and one suffix: binary (`Ki` … `Ei`), decimal
/// (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`) or an exponent (`e3`, `E-2`).
pub fn parse_quantity(text: &str) -> Result<i64, String> {
    let bad = |why: &str| Err(format!("invalid quantity `{text}`: {why}"));
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        Some(_) => (false, text),
        None => return bad("it is empty"),
    };
    let number_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return bad("expected a number");
    }
    if fraction.contains('.') {
        return bad("more than one decimal point");
    }

    // The digits as one integer, and how many of them follow the decimal point. Digits past
    // what fits are dropped after noting whether they were all zero, so the result still
    // rounds up correctly.
    let mut mantissa: u128 = 0;
    let mut scale: i32 = 0;
    let mut dropped_nonzero = false;
    for (digit, after_point) in whole
        .bytes()
        .map(|b| (b, false))
        .chain(fraction.bytes().map(|b| (b, true)))
    {
        let value = u128::from(digit - b'0');
        match mantissa.checked_mul(10).and_then(|m| m.checked_add(value)) {
            Some(next) if next < 1 << 100 => {
                mantissa = next;
                if after_point {
                    scale += 1;
                }
            }
            _ => {
                dropped_nonzero |= value != 0;
                if !after_point {
                    scale -= 1;
                }
            }
        }
    }

    let (exp10, exp2) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => match suffix.strip_prefix(['e', 'E']).map(str::parse::<i32>) {
            Some(Ok(exp)) if (-1000..=1000).contains(&exp) => (exp, 0),
            Some(_) => return bad("the exponent is not a small integer"),
            None => {
                return bad(
                    "unknown suffix; use Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E",
                );
            }
        },
    };

    let magnitude = scaled(mantissa, exp10 + 3 - scale, exp2, dropped_nonzero);
    // Resource amounts are never negative; a negative quantity keeps the magnitude computed
    // above, which rounds away from zero.
    Ok(match (negative, i64::try_from(magnitude)) {
        (false, Ok(value)) => value,
        (false, Err(_)) => i64::MAX,
        (true, Ok(value)) => -value,
        (true, Err(_)) => i64::MIN,
    })
}

/// `mantissa * 10^exp10 * 2^exp2`, rounded up, saturating at `u128::MAX`.
fn scaled(mantissa: u128, exp10: i32, exp2: u32, inexact: bool) -> u128 {
    if mantissa == 0 {
        return 0;
    }
    let mut value = mantissa;
    for _ in 0..exp2 {
        value = match value.checked_mul(2) {
            Some(v) => v,
            None => return u128::MAX,
        };
    }
    if exp10 >= 0 {
        for _ in 0..exp10 {
            value = match value.checked_mul(10) {
                Some(v) => v,
                None => return u128::MAX,
            };
        }
        value + u128::from(inexact && value != u128::MAX)
    } else {
        let mut divisor: u128 = 1;
        for _ in 0..-exp10 {
            divisor = match divisor.checked_mul(10) {
                Some(d) => d,
                // The divisor exceeds any mantissa: a positive value rounds up to one.
                None => return 1,
            };
        }
        value.div_ceil(divisor)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_quantity;

    #[test]
    fn plain_and_suffixed_quantities_scale_to_thousandths() {
        assert_eq!(parse_quantity("1"), Ok(1_000));
        assert_eq!(parse_quantity("250m"), Ok(250));
        assert_eq!(parse_quantity("1.5"), Ok(1_500));
        assert_eq!(parse_quantity("2k"), Ok(2_000_000));
        assert_eq!(parse_quantity("1Gi"), Ok(1_073_741_824_000));
        assert_eq!(parse_quantity("256Gi"), Ok(256 * 1_073_741_824_000));
        assert_eq!(parse_quantity("1.5Ki"), Ok(1_536_000));
        assert_eq!(parse_quantity("1e3"), Ok(1_000_000));
        assert_eq!(parse_quantity("5E-3"), Ok(5));
        assert_eq!(parse_quantity(".5"), Ok(500));
        assert_eq!(parse_quantity("+3"), Ok(3_000));
        assert_eq!(parse_quantity("-2"), Ok(-2_000));
    }

    #[test]
    fn fractions_of_a_thousandth_round_up() {
        assert_eq!(parse_quantity("1n"), Ok(1));
        assert_eq!(parse_quantity("0.0001"), Ok(1));
        assert_eq!(parse_quantity("1500u"), Ok(2));
        assert_eq!(parse_quantity("0"), Ok(0));
    }

    #[test]
    fn huge_quantities_saturate() {
        assert_eq!(parse_quantity("16Ei"), Ok(i64::MAX));
        assert_eq!(parse_quantity("1e100"), Ok(i64::MAX));
        assert_eq!(
            parse_quantity("99999999999999999999999999999999999999999"),
            Ok(i64::MAX)
        );
        assert_eq!(parse_quantity("-1e100"), Ok(i64::MIN));
    }

    #[test]
    fn malformed_quantities_are_rejected_with_the_text() {
        for text in ["", "Gi", "1Zi", "1.2.3", "1 Gi", "-", "1e", "1ex", "12gi"] {
            let error = parse_quantity(text).unwrap_err();
            assert!(error.contains(&format!("`{text}`")), "{error}");
        }
    }
}
