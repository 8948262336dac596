//! Reading and rewriting the binary structure of a component: its top-level sections (for the
//! signature) and custom sections anywhere inside it (for the manifest).
//!
//! The top-level walk is ours (a section is `id, LEB128 size, bytes`) because signing must keep
//! every byte it does not strip; the deep search uses wasmparser because the guest toolchain puts
//! `warren-manifest` inside the nested core module.

use super::PluginError;

/// A component's preamble: magic, version 0x0d, layer 1.
pub const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// A core module's preamble.
pub const MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// One top-level section: its id and byte range (header included) in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopSection<'a> {
    pub id: u8,
    /// Start of the section id byte.
    pub start: usize,
    /// One past the last content byte.
    pub end: usize,
    /// For custom sections (id 0): the section name and its data.
    pub custom: Option<(&'a str, &'a [u8])>,
}

fn malformed(why: impl Into<String>) -> PluginError {
    PluginError::Malformed(why.into())
}

/// Reads an unsigned LEB128 u32 at `*pos`, advancing it.
fn read_u32(bytes: &[u8], pos: &mut usize) -> Result<u32, PluginError> {
    let mut result: u64 = 0;
    for i in 0..5 {
        let b = *bytes.get(*pos).ok_or_else(|| malformed("truncated LEB128 number"))?;
        *pos += 1;
        result |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(result).map_err(|_| malformed("LEB128 number too large"));
        }
    }
    Err(malformed("LEB128 number too long"))
}

pub fn write_u32(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Checks the component preamble; a core module gets its own message (it must be componentized).
pub fn check_component_header(bytes: &[u8]) -> Result<(), PluginError> {
    match bytes.get(..8) {
        Some(h) if h == COMPONENT_HEADER => Ok(()),
        Some(h) if h == MODULE_HEADER => Err(PluginError::NotAComponent(
            "this is a core WebAssembly module; build it as a wasm32-wasip2 component".into(),
        )),
        _ => Err(PluginError::NotAComponent("missing the WebAssembly component header".into())),
    }
}

/// Splits a component into its top-level sections, refusing anything truncated or malformed.
pub fn top_level_sections(bytes: &[u8]) -> Result<Vec<TopSection<'_>>, PluginError> {
    check_component_header(bytes)?;
    let mut pos = 8;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let start = pos;
        let id = bytes[pos];
        pos += 1;
        let size = read_u32(bytes, &mut pos)? as usize;
        let end = pos
            .checked_add(size)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| malformed("section runs past the end of the file"))?;
        let custom = if id == 0 {
            let mut p = pos;
            let name_len = read_u32(bytes, &mut p)? as usize;
            let name_end = p
                .checked_add(name_len)
                .filter(|&e| e <= end)
                .ok_or_else(|| malformed("custom section name runs past its section"))?;
            let name = std::str::from_utf8(&bytes[p..name_end])
                .map_err(|_| malformed("custom section name is not UTF-8"))?;
            Some((name, &bytes[name_end..end]))
        } else {
            None
        };
        out.push(TopSection { id, start, end, custom });
        pos = end;
    }
    Ok(out)
}

/// Encodes a custom section (id 0) named `name` holding `data`.
pub fn encode_custom_section(name: &str, data: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(name.len() + data.len() + 5);
    write_u32(&mut content, name.len() as u32);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(data);
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(0);
    write_u32(&mut out, content.len() as u32);
    out.extend_from_slice(&content);
    out
}

/// Every custom section named `name`, at any depth (top level, nested components, core modules).
pub fn find_custom_sections<'a>(bytes: &'a [u8], name: &str) -> Result<Vec<&'a [u8]>, PluginError> {
    let mut found = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| malformed(format!("cannot parse the component: {e}")))?;
        if let wasmparser::Payload::CustomSection(reader) = payload
            && reader.name() == name
        {
            found.push(reader.data());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component_with(sections: &[Vec<u8>]) -> Vec<u8> {
        let mut v = COMPONENT_HEADER.to_vec();
        for s in sections {
            v.extend_from_slice(s);
        }
        v
    }

    #[test]
    fn leb_roundtrip() {
        for v in [0u32, 1, 127, 128, 300, 16_384, u32::MAX] {
            let mut buf = Vec::new();
            write_u32(&mut buf, v);
            let mut pos = 0;
            assert_eq!(read_u32(&buf, &mut pos).unwrap(), v);
            assert_eq!(pos, buf.len());
        }
        let mut pos = 0;
        assert!(read_u32(&[0x80, 0x80], &mut pos).is_err());
    }

    #[test]
    fn walks_custom_sections_and_refuses_truncation() {
        let a = encode_custom_section("warren-manifest", b"name = \"x\"");
        let b = encode_custom_section("other", b"");
        let bytes = component_with(&[a.clone(), b]);
        let secs = top_level_sections(&bytes).unwrap();
        assert_eq!(secs.len(), 2);
        assert_eq!(secs[0].custom, Some(("warren-manifest", &b"name = \"x\""[..])));
        assert_eq!(secs[1].start, 8 + a.len());
        assert!(top_level_sections(&bytes[..bytes.len() - 1]).is_err());
        let mut cut = bytes.clone();
        cut.truncate(8 + 3);
        assert!(top_level_sections(&cut).is_err());
    }

    #[test]
    fn refuses_modules_and_junk() {
        assert!(matches!(check_component_header(&MODULE_HEADER), Err(PluginError::NotAComponent(_))));
        assert!(check_component_header(b"hello").is_err());
        assert!(top_level_sections(b"\0asm").is_err());
    }
}
