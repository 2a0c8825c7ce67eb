//! The fast path for entry bodies, and the check that holds it to the TOML
//! parser.

use toml::Spanned;

/// TOML whitespace: nothing else separates tokens (not Unicode spaces).
const WS: [char; 2] = [' ', '\t'];

/// A scalar value of a `key = value` line, with its span in the entry.
pub(crate) enum Scalar {
    Str(Spanned<String>),
    Int(Spanned<i64>),
    Bool(Spanned<bool>),
}

/// The fast path for entry bodies: every line blank, a comment, or
/// `key = value` with a plain scalar (a string without escapes, a decimal
/// integer, a boolean), each key once. Anything else is `None`, and the
/// entry goes through the TOML parser, which also gives the error message.
///
/// Why: the TOML parser takes ~2.5 µs per entry, which alone would put a
/// 25,600-tunnel swap past its 100 ms budget; every entry ferry itself
/// writes (the state file) and typical tables take this path. [`agrees_with_toml`]
/// holds the two to the same result (a unit test and the `config_fast`
/// fuzz target call it).
pub(crate) fn scalars(body: &str) -> Option<Vec<(&str, Scalar)>> {
    // TOML allows no control character but tab anywhere, comments
    // included, and a line ends in LF or CRLF (the fuzz target found
    // both): decline the rest.
    if body
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return None;
    }
    let mut out: Vec<(&str, Scalar)> = Vec::new();
    let mut off = 0;
    for line in body.split_inclusive('\n') {
        let start = off;
        off += line.len();
        let content = match line.strip_suffix('\n') {
            Some(l) => l.strip_suffix('\r').unwrap_or(l),
            None => line,
        };
        if content.contains('\r') {
            return None;
        }
        let t = content.trim_matches(WS);
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (k, rest) = t.split_once('=')?;
        let key = k.trim_matches(WS);
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        if out.iter().any(|(k, _)| *k == key) {
            return None;
        }
        let v = rest.trim_start_matches(WS);
        let vstart =
            start + (content.len() - content.trim_start_matches(WS).len()) + (t.len() - v.len());
        let (value, len) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"')?;
            let inner = &q[..end];
            if inner.contains(['\\', '\n']) || inner.chars().any(char::is_control) {
                return None;
            }
            (
                Scalar::Str(Spanned::new(vstart..vstart + end + 2, inner.to_string())),
                end + 2,
            )
        } else {
            let tok_len = v
                .find(|c: char| WS.contains(&c) || c == '#')
                .unwrap_or(v.len());
            let tok = &v[..tok_len];
            let sc = match tok {
                "true" => Scalar::Bool(Spanned::new(vstart..vstart + tok_len, true)),
                "false" => Scalar::Bool(Spanned::new(vstart..vstart + tok_len, false)),
                _ => {
                    let digits = tok.strip_prefix(['-', '+']).unwrap_or(tok);
                    // Leading zeros are invalid TOML: let the parser say so.
                    if digits.is_empty()
                        || !digits.bytes().all(|b| b.is_ascii_digit())
                        || (digits.len() > 1 && digits.starts_with('0'))
                    {
                        return None;
                    }
                    Scalar::Int(Spanned::new(vstart..vstart + tok_len, tok.parse().ok()?))
                }
            };
            (sc, tok_len)
        };
        let after = v[len..].trim_start_matches(WS);
        if !(after.is_empty() || after.starts_with('#')) {
            return None;
        }
        out.push((key, value));
    }
    Some(out)
}

/// Takes field `key` if present; `Err` when its value is not of the kind
/// `pick` accepts (the TOML parser then words the error).
fn take<T>(
    f: &mut Vec<(&str, Scalar)>,
    key: &str,
    pick: fn(Scalar) -> Option<Spanned<T>>,
) -> Result<Option<Spanned<T>>, ()> {
    match f.iter().position(|(k, _)| *k == key) {
        None => Ok(None),
        Some(i) => pick(f.swap_remove(i).1).map(Some).ok_or(()),
    }
}

pub(crate) fn take_str(
    f: &mut Vec<(&str, Scalar)>,
    key: &str,
) -> Result<Option<Spanned<String>>, ()> {
    take(f, key, |v| match v {
        Scalar::Str(s) => Some(s),
        _ => None,
    })
}

pub(crate) fn take_int(f: &mut Vec<(&str, Scalar)>, key: &str) -> Result<Option<Spanned<i64>>, ()> {
    take(f, key, |v| match v {
        Scalar::Int(s) => Some(s),
        _ => None,
    })
}

pub(crate) fn take_bool(
    f: &mut Vec<(&str, Scalar)>,
    key: &str,
) -> Result<Option<Spanned<bool>>, ()> {
    take(f, key, |v| match v {
        Scalar::Bool(s) => Some(s),
        _ => None,
    })
}

/// An entry type with a fast path (see [`scalars`]).
pub(crate) trait FastEntry: serde::de::DeserializeOwned + std::fmt::Debug {
    /// `[[tunnel]]` or `[[station]]`.
    const KIND: &'static str;
    /// The entry from fast-path scalars; `None` for anything the TOML path
    /// must word (a missing key, an unknown key, a wrong type).
    fn from_scalars(f: Vec<(&str, Scalar)>) -> Option<Self>;
}

/// Whether the fast path reads `body` (an entry's body) exactly as the TOML
/// parser does, as a `[[tunnel]]` and as a `[[station]]`: the same fields,
/// values and spans; the fast path may only decline (then TOML decides).
/// `Err` says how they differ. The unit tests and the `config_fast` fuzz
/// target hold the fast path to this.
pub fn agrees_with_toml(body: &str) -> Result<(), String> {
    agrees::<super::schema::RawTunnel>(body)?;
    agrees::<super::schema::RawStation>(body)
}

fn agrees<T: FastEntry>(body: &str) -> Result<(), String> {
    let Some(fast) = scalars(body).and_then(T::from_scalars) else {
        return Ok(());
    };
    match toml::from_str::<T>(body) {
        Ok(slow) => {
            let (f, s) = (format!("{fast:?}"), format!("{slow:?}"));
            if f == s {
                Ok(())
            } else {
                Err(format!("{}: fast path read {f}, TOML {s}", T::KIND))
            }
        }
        Err(e) => Err(format!(
            "{}: fast path accepted what TOML refuses: {}",
            T::KIND,
            e.message()
        )),
    }
}
