//! Reading a file's `[[tunnel]]` and `[[station]]` entries one at a time.
//!
//! Why: a 25,600-tunnel table parsed as one TOML document costs tens of MiB
//! of intermediate tree; split at its entry headers and parsed entry by
//! entry (most through the [`super::fast`] path) it costs next to nothing,
//! and a swap stays inside its 100 ms budget. Files the split cannot handle
//! safely (multi-line strings, inline arrays of tables) are parsed whole.

use toml::Spanned;

use super::{
    ConfigError,
    fast::{FastEntry, scalars},
    schema::{RawStation, RawTunnel},
    source::Source,
};

/// One `[[tunnel]]` or `[[station]]` entry: its fields (spans relative to
/// `base`) and where its header is in the file.
pub(crate) struct Entry<T> {
    pub(crate) base: usize,
    pub(crate) header: usize,
    pub(crate) raw: T,
}

/// The `[[tunnel]]` and `[[station]]` entries of a file, each as
/// (header offset, body offset, body), and the rest of the file with those
/// entries blanked out (same length and line breaks, so spans in it stay
/// right). `None` when a header line could be inside a multi-line string.
///
/// Why: a 25,600-tunnel table parsed as one TOML document costs tens of
/// MiB of intermediate tree; parsed entry by entry it costs next to nothing.
#[allow(clippy::type_complexity)]
fn split_entries(
    text: &str,
) -> Option<(String, Vec<(usize, usize, &str)>, Vec<(usize, usize, &str)>)> {
    if text.contains("\"\"\"") || text.contains("\'\'\'") {
        return None;
    }
    let mut headers = Vec::new();
    let mut off = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            let kind = if t.starts_with("[[tunnel]]") {
                1
            } else if t.starts_with("[[station]]") {
                2
            } else {
                0
            };
            headers.push((off, off + line.len(), kind));
        }
        off += line.len();
    }
    let (mut tunnels, mut stations) = (Vec::new(), Vec::new());
    let mut other = Vec::new();
    let first = headers.first().map_or(text.len(), |h| h.0);
    other.push(0..first);
    for (i, &(start, body, kind)) in headers.iter().enumerate() {
        let end = headers.get(i + 1).map_or(text.len(), |h| h.0);
        if kind == 0 {
            other.push(start..end);
            continue;
        }
        let entry = (start, body, text.get(body..end)?);
        if kind == 1 {
            tunnels.push(entry);
        } else {
            stations.push(entry);
        }
    }
    // A table file is usually entries only: then there is nothing else to
    // parse (and no megabytes of blanks to lex).
    let only_entries = other.iter().all(|r| {
        text[r.clone()].lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        })
    });
    if only_entries {
        return Some((String::new(), tunnels, stations));
    }
    let mut rest = text.as_bytes().to_vec();
    for (start, body, t) in tunnels.iter().chain(&stations) {
        for b in &mut rest[*start..*body + t.len()] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    }
    Some((String::from_utf8(rest).ok()?, tunnels, stations))
}

/// The `[[tunnel]]` or `[[station]]` entries of a file: either chunks of
/// text parsed one at a time as they are validated (so a 25,600-entry
/// table never exists as 25,600 raw entries at once), or entries a
/// whole-file parse already produced.
pub(crate) enum Entries<'a, T> {
    Chunks(Vec<(usize, usize, &'a str)>),
    Parsed(Vec<Entry<T>>),
}

impl<'a, T: FastEntry> Entries<'a, T> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Entries::Chunks(c) => c.len(),
            Entries::Parsed(p) => p.len(),
        }
    }

    /// Offset of entry `i`'s header.
    pub(crate) fn header(&self, i: usize) -> usize {
        match self {
            Entries::Chunks(c) => c[i].0,
            Entries::Parsed(p) => p[i].header,
        }
    }

    /// The entries, each parsed when it is reached.
    pub(crate) fn into_iter<'s>(
        self,
        src: &'s Source<'a>,
    ) -> Box<dyn Iterator<Item = Result<Entry<T>, ConfigError>> + 's>
    where
        'a: 's,
        T: 's,
    {
        match self {
            Entries::Parsed(p) => Box::new(p.into_iter().map(Ok)),
            Entries::Chunks(c) => Box::new(c.into_iter().map(move |(header, body, t)| {
                let raw = match scalars(t).and_then(T::from_scalars) {
                    Some(raw) => raw,
                    None => toml::from_str(t).map_err(|e| {
                        src.rebased(body).err(
                            e.span(),
                            format!("in {}: {}", T::KIND, e.message().trim_end()),
                        )
                    })?,
                };
                Ok(Entry {
                    base: body,
                    header,
                    raw,
                })
            })),
        }
    }
}

/// Parses a file whose `[[tunnel]]`/`[[station]]` entries are split off
/// (see [`split_entries`]) and parsed later, one by one; `take` moves
/// those entries out of a parsed document (a whole-file parse, used when
/// the split is not safe).
#[allow(clippy::type_complexity)]
pub(crate) fn parse_split<'a, R: serde::de::DeserializeOwned>(
    src: &Source<'a>,
    take: impl Fn(&mut R) -> (Vec<Spanned<RawTunnel>>, Vec<Spanned<RawStation>>),
) -> Result<(R, Entries<'a, RawTunnel>, Entries<'a, RawStation>), ConfigError> {
    fn parsed<T>(v: Vec<Spanned<T>>) -> Vec<Entry<T>> {
        v.into_iter()
            .map(|e| Entry {
                base: 0,
                header: e.span().start,
                raw: e.into_inner(),
            })
            .collect()
    }
    let whole = || -> Result<(R, Entries<'a, RawTunnel>, Entries<'a, RawStation>), ConfigError> {
        let mut r: R = toml::from_str(src.text)
            .map_err(|e| src.err(e.span(), e.message().trim_end().to_string()))?;
        let (t, s) = take(&mut r);
        Ok((r, Entries::Parsed(parsed(t)), Entries::Parsed(parsed(s))))
    };
    let Some((rest, tunnels, stations)) = split_entries(src.text) else {
        return whole();
    };
    let mut r: R =
        toml::from_str(&rest).map_err(|e| src.err(e.span(), e.message().trim_end().to_string()))?;
    let (t, s) = take(&mut r);
    if !t.is_empty() || !s.is_empty() {
        // Entries the split did not see (e.g. inline arrays): parse whole.
        return whole();
    }
    Ok((r, Entries::Chunks(tunnels), Entries::Chunks(stations)))
}
