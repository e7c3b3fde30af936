//! `switchyard publish`: one message from text, a file or standard input.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use bytes::Bytes;

use crate::args::PublishArgs;
use crate::client::Client;

/// Publishes the message and prints the node's answer as it came; `ca`
/// is `--ca-file`.
pub(crate) async fn run(a: PublishArgs, ca: Option<&Path>) -> Result<()> {
    let client = Client::with_ca_file(&a.url, ca)?.with_token(a.token.clone())?;
    let payload = read_data(a.data.as_deref())?;
    let headers = parse_headers(&a.headers)?;
    let answer = client
        .publish(
            &a.topic,
            payload,
            a.key.as_deref(),
            &headers,
            a.content_type.as_deref(),
        )
        .await?;
    println!("{answer}");
    Ok(())
}

/// The payload: nothing, standard input for `-`, a file for `@path`, else
/// the text itself.
fn read_data(data: Option<&str>) -> Result<Bytes> {
    Ok(match data {
        None => Bytes::new(),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
            Bytes::from(buf)
        }
        Some(s) if s.starts_with('@') => {
            Bytes::from(std::fs::read(&s[1..]).with_context(|| format!("cannot read {}", &s[1..]))?)
        }
        Some(s) => Bytes::from(s.to_owned()),
    })
}

/// `--header NAME=VALUE` flags as pairs.
fn parse_headers(headers: &[String]) -> Result<Vec<(String, String)>> {
    headers
        .iter()
        .map(|h| match h.split_once('=') {
            Some((n, v)) if !n.is_empty() => Ok((n.to_owned(), v.to_owned())),
            _ => bail!("--header {h:?}: expected NAME=VALUE"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_data() {
        let h = parse_headers(&["a=b".into(), "c=d=e".into(), "f=".into()]).unwrap();
        assert_eq!(
            h,
            [("a", "b"), ("c", "d=e"), ("f", "")].map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        let e = parse_headers(&["=x".into()]).unwrap_err();
        assert_eq!(e.to_string(), "--header \"=x\": expected NAME=VALUE");
        assert!(parse_headers(&["nope".into()]).is_err());
        assert_eq!(read_data(None).unwrap(), Bytes::new());
        assert_eq!(read_data(Some("text")).unwrap(), Bytes::from("text"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.txt");
        std::fs::write(&file, "from a file").unwrap();
        let arg = format!("@{}", file.display());
        assert_eq!(read_data(Some(&arg)).unwrap(), Bytes::from("from a file"));
        assert!(read_data(Some("@/nonexistent/file")).is_err());
    }
}
