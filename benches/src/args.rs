//! Command-line flags for the bench binaries: `--flag value` and `--flag=value`.

use anyhow::{Context as _, bail};

/// Walks the arguments one flag at a time.
#[derive(Debug)]
pub struct Flags<I> {
    it: I,
    flag: String,
    inline: Option<String>,
}

impl<I: Iterator<Item = String>> Flags<I> {
    /// Over `args` (without the program name).
    pub fn new(args: impl IntoIterator<Item = String, IntoIter = I>) -> Self {
        Flags {
            it: args.into_iter(),
            flag: String::new(),
            inline: None,
        }
    }

    /// The next flag (for `--flag=value`, the part before `=`).
    pub fn next_flag(&mut self) -> Option<String> {
        let arg = self.it.next()?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        self.flag.clone_from(&flag);
        self.inline = inline;
        Some(flag)
    }

    /// The value of the current flag: after its `=`, or the next argument.
    pub fn value(&mut self) -> anyhow::Result<String> {
        match self.inline.take() {
            Some(v) => Ok(v),
            None => self
                .it
                .next()
                .with_context(|| format!("{} needs a value", self.flag)),
        }
    }

    /// The value of the current flag as a positive integer.
    pub fn positive(&mut self) -> anyhow::Result<usize> {
        let v = self.value()?;
        positive(&self.flag, &v)
    }

    /// Refuses `--switch=value` when the current flag is one of `switches` (flags that take
    /// no value). Call after the flag was handled.
    pub fn check_switch(&self, switches: &[&str]) -> anyhow::Result<()> {
        if self.inline.is_some() && switches.contains(&self.flag.as_str()) {
            bail!("{} takes no value", self.flag);
        }
        Ok(())
    }

    /// The value of the current flag as a comma-separated list (empty items dropped).
    pub fn list(&mut self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .value()?
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect())
    }
}

/// `v` as a positive integer, for `flag`.
pub fn positive(flag: &str, v: &str) -> anyhow::Result<usize> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{flag} wants a positive integer, got {v:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_and_bad_values() {
        let args = ["--a=1", "--b", "2", "--c", "x", "--d"].map(String::from);
        let mut f = Flags::new(args);
        assert_eq!(f.next_flag().as_deref(), Some("--a"));
        assert_eq!(f.positive().unwrap(), 1);
        assert_eq!(f.next_flag().as_deref(), Some("--b"));
        assert_eq!(f.value().unwrap(), "2");
        assert_eq!(f.next_flag().as_deref(), Some("--c"));
        let e = f.positive().unwrap_err().to_string();
        assert!(e.contains("--c wants a positive integer"), "{e}");
        assert_eq!(f.next_flag().as_deref(), Some("--d"));
        assert_eq!(f.value().unwrap_err().to_string(), "--d needs a value");
        assert_eq!(f.next_flag(), None);
        let mut f = Flags::new(["--l= a,,b ".to_owned()]);
        f.next_flag();
        assert_eq!(f.list().unwrap(), ["a", "b"]);
        let mut f = Flags::new(["--quick=yes".to_owned()]);
        f.next_flag();
        assert!(f.check_switch(&["--other"]).is_ok());
        let e = f.check_switch(&["--quick"]).unwrap_err().to_string();
        assert_eq!(e, "--quick takes no value");
    }
}
