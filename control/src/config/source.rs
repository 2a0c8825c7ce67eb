//! Where a configuration error is: [`ConfigError`] (`FILE:LINE:COLUMN:
//! reason`) and [`Source`], which turns the TOML parser's byte spans into
//! lines and columns, and words the value checks every schema shares.

use std::{fmt, net::IpAddr, ops::Range, path::Path, path::PathBuf};

use ferry_dataplane::tables::parse_mac;
use toml::Spanned;

/// A configuration error with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file (or `<input>`).
    pub file: PathBuf,
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// 1-based column, if known.
    pub column: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.reason)
    }
}

impl ConfigError {
    /// An error about the whole of `file` (no position).
    pub fn whole(file: &Path, reason: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            column: None,
            reason: reason.into(),
        }
    }
}

/// Turns byte spans into line/column for errors. Spans are relative to
/// `base`: entries parsed on their own (see `entries::split_entries`) get a
/// `Source` rebased to where they start in the file.
#[derive(Clone)]
pub(crate) struct Source<'a> {
    file: &'a Path,
    pub(crate) text: &'a str,
    /// Byte offsets of the newlines.
    newlines: std::rc::Rc<[usize]>,
    base: usize,
}

impl<'a> Source<'a> {
    pub(crate) fn rebased(&self, base: usize) -> Self {
        Self {
            base,
            ..self.clone()
        }
    }

    /// An error at the start of 1-based `line`.
    pub(crate) fn at_line(&self, line: usize, reason: impl Into<String>) -> ConfigError {
        let offset = if line <= 1 {
            0
        } else {
            self.newlines
                .get(line - 2)
                .map_or(self.text.len(), |n| n + 1)
        };
        self.at_offset(offset, reason)
    }

    /// An error at absolute byte `offset`.
    pub(crate) fn at_offset(&self, offset: usize, reason: impl Into<String>) -> ConfigError {
        self.rebased(0).err(Some(offset..offset), reason)
    }

    pub(crate) fn err(&self, span: Option<Range<usize>>, reason: impl Into<String>) -> ConfigError {
        let (line, column) = match span {
            Some(s) => {
                let (l, c) = self.position(self.base + s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            reason: reason.into(),
        }
    }

    pub(crate) fn at<T>(&self, v: &Spanned<T>, reason: impl Into<String>) -> ConfigError {
        self.err(Some(v.span()), reason)
    }

    pub(crate) fn new(file: &'a Path, text: &'a str) -> Self {
        let newlines: Vec<usize> = text
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i)
            .collect();
        let newlines = newlines.into();
        Self {
            file,
            text,
            newlines,
            base: 0,
        }
    }

    /// 1-based line and column (in characters) of byte `offset`; a binary
    /// search, since large tables ask once per entry.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.newlines.partition_point(|&n| n < offset);
        let start = if line == 0 {
            0
        } else {
            self.newlines[line - 1] + 1
        };
        let column = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        (line + 1, column)
    }

    pub(crate) fn line(&self, offset: usize) -> usize {
        self.position(offset).0
    }

    /// The 1-based line where value `v` starts.
    pub(crate) fn line_of<T>(&self, v: &Spanned<T>) -> usize {
        self.line(self.base + v.span().start)
    }

    pub(crate) fn int<T: TryFrom<i64>>(
        &self,
        v: &Spanned<i64>,
        what: &str,
        lo: i64,
        hi: i64,
    ) -> Result<T, ConfigError> {
        let n = *v.get_ref();
        if n < lo || n > hi {
            return Err(self.at(v, format!("{what} {n} is out of range {lo}-{hi}")));
        }
        T::try_from(n).map_err(|_| self.at(v, format!("{what} {n} is out of range")))
    }

    pub(crate) fn mac(&self, v: &Spanned<String>, what: &str) -> Result<[u8; 6], ConfigError> {
        let m = parse_mac(v.get_ref().trim()).ok_or_else(|| {
            self.at(
                v,
                format!(
                    "{what} {:?} is not a MAC address (aa:bb:cc:dd:ee:ff)",
                    v.get_ref()
                ),
            )
        })?;
        if m[0] & 1 == 1 || m == [0; 6] {
            return Err(self.at(v, format!("{what} {} must be a unicast MAC", v.get_ref())));
        }
        Ok(m)
    }

    pub(crate) fn ip(&self, v: &Spanned<String>, what: &str) -> Result<IpAddr, ConfigError> {
        let a: IpAddr = v.get_ref().trim().parse().map_err(|_| {
            self.at(
                v,
                format!("{what} {:?} is not an IPv4 or IPv6 address", v.get_ref()),
            )
        })?;
        if a.is_unspecified() || a.is_multicast() {
            return Err(self.at(v, format!("{what} {a} must be a unicast address")));
        }
        if let IpAddr::V4(v4) = a
            && v4.is_broadcast()
        {
            return Err(self.at(v, format!("{what} {a} must be a unicast address")));
        }
        Ok(a)
    }
}
