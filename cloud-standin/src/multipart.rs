//! Just enough `multipart/form-data` (RFC 7578) to find one file field of a bulk upload.

/// The content of the part named `field` of a `multipart/form-data` body, or why not.
pub(crate) fn file_field<'a>(
    content_type: &str,
    body: &'a [u8],
    field: &str,
) -> Result<&'a [u8], String> {
    let mut params = content_type.split(';').map(str::trim);
    if !params
        .next()
        .is_some_and(|t| t.eq_ignore_ascii_case("multipart/form-data"))
    {
        return Err(format!(
            "Content-Type must be multipart/form-data, not `{content_type}`"
        ));
    }
    let boundary = params
        .find_map(|p| p.strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
        .filter(|b| !b.is_empty())
        .ok_or("multipart/form-data without a boundary")?;
    let delimiter = format!("--{boundary}");
    let mut rest = body;
    // The preamble, up to the first delimiter.
    let start = find(rest, delimiter.as_bytes()).ok_or("no multipart part found")?;
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Err(format!("no part named `{field}`"));
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("malformed multipart delimiter")?;
        let head_end = find(rest, b"\r\n\r\n").ok_or("multipart part without headers")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let content = &rest[head_end + 4..];
        let end_marker = format!("\r\n{delimiter}");
        let end = find(content, end_marker.as_bytes()).ok_or("unterminated multipart part")?;
        let named = head.lines().any(|line| {
            let lower = line.to_ascii_lowercase();
            lower.starts_with("content-disposition:")
                && lower.contains("form-data")
                && line.contains(&format!("name=\"{field}\""))
        });
        if named {
            return Ok(&content[..end]);
        }
        rest = &content[end + end_marker.len()..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_named_part() {
        let body = b"preamble\r\n--XY\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nno\r\n--XY\r\nContent-Disposition: form-data; name=\"enrollment_identities\"; filename=\"a.csv\"\r\nContent-Type: text/csv\r\n\r\nh\r\nA-1\r\n\r\n--XY--\r\n";
        let got = file_field(
            "multipart/form-data; boundary=XY",
            body,
            "enrollment_identities",
        );
        assert_eq!(got.unwrap(), b"h\r\nA-1\r\n");
        assert!(file_field("multipart/form-data; boundary=XY", body, "x").is_err());
        assert!(file_field("text/csv", body, "x").is_err());
        assert!(file_field("multipart/form-data", body, "x").is_err());
    }
}
