//! The request path as policies see it (DESIGN §2): one normal form, or a refusal.
//!
//! Policies match paths as strings, so a path that a backend would resolve to another route than the
//! string says must never reach them. Percent-encoded unreserved characters are decoded (`/%61dmin` is
//! `/admin`) and the remaining escapes written in upper case (`%c3%a9` is `%C3%A9`), so one resource
//! has one spelling. Refused: a segment that is `.` or `..` once its `;parameters` are cut (servlet
//! containers and Spring resolve `/orders/..;/admin` to `/admin`); an empty segment other than a
//! trailing one (`//admin` and `/;x/admin` are `/admin` to backends that merge slashes); an encoded
//! `.`, `/` or `\`, a backslash, a control character, raw or encoded, and a malformed escape. An empty
//! path is `/`, as Apigee renders a base path's `proxy.pathsuffix` as `""`.

use std::borrow::Cow;

/// Why a path was refused. The text is safe to show a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with `/`")]
    NotAbsolute,
    #[error("the request path has a dot segment")]
    DotSegment,
    #[error("the request path has an empty segment")]
    EmptySegment,
    #[error("the request path encodes `.`, `/` or `\\`")]
    EncodedSeparator,
    #[error("the request path has a backslash")]
    Backslash,
    #[error("the request path has a control character")]
    ControlCharacter,
    #[error("the request path has a malformed percent-encoding")]
    MalformedEscape,
}

/// The normal form of `path`, borrowed when it is already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if path.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let normal = if path.contains('%') {
        Cow::Owned(decode_unreserved(path)?)
    } else {
        Cow::Borrowed(path)
    };
    check_characters(&normal)?;
    check_segments(&normal)?;
    Ok(normal)
}

/// `path` with escapes of unreserved characters decoded and the others in upper case.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let mut normal = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(position) = rest.find('%') {
        let (before, escape) = rest.split_at(position);
        normal.push_str(before);
        let hex = escape
            .get(1..3)
            .filter(|hex| hex.bytes().all(|digit| digit.is_ascii_hexdigit()))
            .ok_or(PathError::MalformedEscape)?;
        let byte = u8::from_str_radix(hex, 16).map_err(|_| PathError::MalformedEscape)?;
        match byte {
            b'.' | b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            byte if byte.is_ascii_control() => return Err(PathError::ControlCharacter),
            byte if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~') => {
                normal.push(char::from(byte));
            }
            byte => {
                normal.push('%');
                normal.push_str(&format!("{byte:02X}"));
            }
        }
        rest = escape.get(3..).unwrap_or_default();
    }
    normal.push_str(rest);
    Ok(normal)
}

fn check_characters(path: &str) -> Result<(), PathError> {
    for character in path.chars() {
        if character == '\\' {
            return Err(PathError::Backslash);
        }
        // C0, DEL and C1 controls: a NUL or a line break means another path to some component.
        if character.is_control() {
            return Err(PathError::ControlCharacter);
        }
    }
    Ok(())
}

fn check_segments(path: &str) -> Result<(), PathError> {
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let name = segment.split_once(';').map_or(segment, |(name, _)| name);
        if name == "." || name == ".." {
            return Err(PathError::DotSegment);
        }
        if name.is_empty() && segments.peek().is_some() {
            return Err(PathError::EmptySegment);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_kept_as_they_are() {
        for path in [
            "/",
            "/orders/42",
            "/orders/",
            "/orders/v1..v2",
            "/orders/report.2027.csv",
            "/orders;jsessionid=1/42",
            "/orders/;x",
            "/caf%C3%A9",
            "/a%20b",
            "/a%3Bb",
            "/é/ünïcödé",
        ] {
            assert_eq!(normalize(path), Ok(Cow::Borrowed(path)), "{path}");
        }
    }

    #[test]
    fn escapes_are_decoded_when_unreserved_and_upper_cased_otherwise() {
        for (path, normal) in [
            ("", "/"),
            ("/%61dmin", "/admin"),
            ("/adm%69n", "/admin"),
            ("/%41%44%4d%49%4e", "/ADMIN"),
            ("/a%2db%5Fc%7ed", "/a-b_c~d"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%3bb", "/a%3Bb"),
            ("/%25", "/%25"),
        ] {
            assert_eq!(normalize(path).as_deref(), Ok(normal), "{path}");
        }
    }

    #[test]
    fn paths_that_could_pass_for_another_route_are_refused() {
        use PathError::*;
        for (path, error) in [
            ("orders", NotAbsolute),
            ("/orders/../admin", DotSegment),
            ("/orders/..;/admin", DotSegment),
            ("/orders/..;jsessionid=x/admin", DotSegment),
            ("/orders/.;/admin", DotSegment),
            ("/./admin", DotSegment),
            ("/a/..", DotSegment),
            ("/a/.", DotSegment),
            ("/a/..;", DotSegment),
            ("//admin", EmptySegment),
            ("/orders//admin", EmptySegment),
            ("/;x/admin", EmptySegment),
            ("/orders/%2e%2e/admin", EncodedSeparator),
            ("/orders/%2E./admin", EncodedSeparator),
            ("/orders/.%2e;/admin", EncodedSeparator),
            ("/a%2Fb", EncodedSeparator),
            ("/a%5cb", EncodedSeparator),
            ("/a\\b", Backslash),
            ("/a\0b", ControlCharacter),
            ("/a%00", ControlCharacter),
            ("/a%0d%0aX-Injected:1", ControlCharacter),
            ("/a\nb", ControlCharacter),
            ("/a%7f", ControlCharacter),
            ("/a\u{85}b", ControlCharacter),
            ("/a%", MalformedEscape),
            ("/a%4", MalformedEscape),
            ("/a%zz", MalformedEscape),
            ("/a%+1", MalformedEscape),
        ] {
            assert_eq!(normalize(path), Err(error), "{path:?}");
        }
    }
}
