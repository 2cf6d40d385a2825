//! Just enough ELF to find a section by name in a relocatable object (a
//! kernel module).
//!
//! Reads the ELF header (32- or 64-bit, little- or big-endian), the section
//! header table and the section-name string table, including the extended
//! numbering used when there are 0xff00 sections or more (the count in
//! section 0's `sh_size`, the string-table index in its `sh_link`). Every
//! offset and size is checked against the data before use, so malformed
//! input gives an [`ElfError`] naming the offset, never a panic. Nothing
//! else (program headers, symbols, relocations) is read.

/// What is wrong with an ELF file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfError {
    /// Byte offset of the offending structure or field.
    pub offset: u64,
    /// What is wrong.
    pub problem: String,
}

/// `SHT_NOBITS`: a section that occupies no space in the file.
const SHT_NOBITS: u32 = 8;
/// `SHN_XINDEX`: the string-table index is in section 0's `sh_link`.
const SHN_XINDEX: u16 = 0xffff;

/// Endianness and word size, with bounds-checked field readers.
struct Reader<'a> {
    data: &'a [u8],
    big_endian: bool,
    is_64: bool,
}

/// The fields of one section header that are used here.
struct SectionHeader {
    name: u32,
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

fn error(offset: u64, problem: impl Into<String>) -> ElfError {
    ElfError {
        offset,
        problem: problem.into(),
    }
}

impl<'a> Reader<'a> {
    /// `len` bytes at `offset`, or an error naming `what`.
    fn bytes(&self, offset: u64, len: u64, what: &str) -> Result<&'a [u8], ElfError> {
        let end = offset.checked_add(len);
        match end {
            Some(end) if end <= self.data.len() as u64 => {
                // Both fit in usize: they are at most the slice's length.
                Ok(&self.data[offset as usize..end as usize])
            }
            _ => Err(error(
                offset,
                format!(
                    "{what} ({len} bytes) runs past the end of the file ({} bytes)",
                    self.data.len()
                ),
            )),
        }
    }

    fn uint<const N: usize>(&self, offset: u64, what: &str) -> Result<[u8; N], ElfError> {
        let bytes = self.bytes(offset, N as u64, what)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        if self.big_endian {
            array.reverse();
        }
        Ok(array)
    }

    fn u16(&self, offset: u64, what: &str) -> Result<u16, ElfError> {
        self.uint::<2>(offset, what).map(u16::from_le_bytes)
    }

    fn u32(&self, offset: u64, what: &str) -> Result<u32, ElfError> {
        self.uint::<4>(offset, what).map(u32::from_le_bytes)
    }

    fn u64(&self, offset: u64, what: &str) -> Result<u64, ElfError> {
        self.uint::<8>(offset, what).map(u64::from_le_bytes)
    }

    /// An address-sized field: 4 bytes in ELF32, 8 in ELF64.
    fn word(&self, offset: u64, what: &str) -> Result<u64, ElfError> {
        if self.is_64 {
            self.u64(offset, what)
        } else {
            self.u32(offset, what).map(u64::from)
        }
    }

    /// The section header at `offset`.
    fn section_header(&self, offset: u64) -> Result<SectionHeader, ElfError> {
        let what = "section header";
        // Field offsets: ELF32 name 0, type 4, flags 8, addr 12, offset 16,
        // size 20, link 24; ELF64 name 0, type 4, flags 8, addr 16,
        // offset 24, size 32, link 40.
        let (off, size, link) = if self.is_64 {
            (24, 32, 40)
        } else {
            (16, 20, 24)
        };
        Ok(SectionHeader {
            name: self.u32(offset, what)?,
            kind: self.u32(offset + 4, what)?,
            offset: self.word(offset + off, what)?,
            size: self.word(offset + size, what)?,
            link: self.u32(offset + link, what)?,
        })
    }
}

/// The contents of the section called `name`, `Ok(None)` when the file has
/// no such section.
pub fn section<'a>(data: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, ElfError> {
    if !data.starts_with(b"\x7FELF") {
        return Err(error(0, "not an ELF file (no \\x7FELF magic)"));
    }
    let ident = |i: usize| data.get(i).copied();
    let is_64 = match ident(4) {
        Some(1) => false,
        Some(2) => true,
        other => return Err(error(4, format!("unknown ELF class {other:?}"))),
    };
    let big_endian = match ident(5) {
        Some(1) => false,
        Some(2) => true,
        other => return Err(error(5, format!("unknown ELF data encoding {other:?}"))),
    };
    let r = Reader {
        data,
        big_endian,
        is_64,
    };
    // e_shoff, e_shentsize, e_shnum, e_shstrndx.
    let (shoff, shentsize, shnum, shstrndx) = if is_64 {
        (0x28, 0x3A, 0x3C, 0x3E)
    } else {
        (0x20, 0x2E, 0x30, 0x32)
    };
    let table = r.word(shoff, "ELF header")?;
    let entry_size = u64::from(r.u16(shentsize, "ELF header")?);
    let mut count = u64::from(r.u16(shnum, "ELF header")?);
    let mut names_index = u64::from(r.u16(shstrndx, "ELF header")?);
    if table == 0 {
        return Err(error(shoff, "the file has no section header table"));
    }
    let min_entry = if is_64 { 64 } else { 40 };
    if entry_size < min_entry {
        return Err(error(
            shentsize,
            format!("section header size {entry_size} is below {min_entry}"),
        ));
    }
    if count == 0 || names_index == u64::from(SHN_XINDEX) {
        let first = r.section_header(table)?;
        if count == 0 {
            count = first.size;
        }
        if names_index == u64::from(SHN_XINDEX) {
            names_index = u64::from(first.link);
        }
    }
    // The whole table must be in the file; this also bounds `count`.
    let table_len = count
        .checked_mul(entry_size)
        .ok_or_else(|| error(table, format!("{count} section headers overflow")))?;
    r.bytes(table, table_len, "section header table")?;
    if names_index >= count {
        return Err(error(
            shstrndx,
            format!(
                "section name table index {names_index} is not below the section count {count}"
            ),
        ));
    }
    let header_at = |index: u64| r.section_header(table + index * entry_size);
    let names_header = header_at(names_index)?;
    let names = r.bytes(names_header.offset, names_header.size, "section name table")?;
    for index in 0..count {
        let header = header_at(index)?;
        let Some(start) = names.get(header.name as usize..) else {
            return Err(error(
                table + index * entry_size,
                format!(
                    "section {index}'s name offset {} is outside the name table",
                    header.name
                ),
            ));
        };
        let end = start.iter().position(|&b| b == 0).unwrap_or(start.len());
        if &start[..end] != name.as_bytes() {
            continue;
        }
        if header.kind == SHT_NOBITS {
            return Err(error(
                table + index * entry_size,
                format!("section {name} occupies no space in the file (SHT_NOBITS)"),
            ));
        }
        return r
            .bytes(header.offset, header.size, &format!("section {name}"))
            .map(Some);
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a minimal relocatable ELF with the given sections (after the
    /// null section and `.shstrtab`), in either class and byte order.
    pub(crate) fn build(is_64: bool, big_endian: bool, sections: &[(&str, &[u8])]) -> Vec<u8> {
        let put = |out: &mut Vec<u8>, value: u64, width: usize| {
            let bytes = value.to_le_bytes();
            let mut field = bytes[..width].to_vec();
            if big_endian {
                field.reverse();
            }
            out.extend_from_slice(&field);
        };
        let word = if is_64 { 8 } else { 4 };
        let header_len = if is_64 { 64 } else { 52 };
        let entry = if is_64 { 64 } else { 40 };
        // Name table: "\0.shstrtab\0name1\0...".
        let mut names = vec![0u8];
        let mut name_offsets = Vec::new();
        for name in std::iter::once(".shstrtab").chain(sections.iter().map(|(n, _)| *n)) {
            name_offsets.push(names.len() as u64);
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let mut body = Vec::new();
        let mut placed = vec![(header_len as u64, names.len() as u64)];
        body.extend_from_slice(&names);
        for (_, data) in sections {
            placed.push(((header_len + body.len()) as u64, data.len() as u64));
            body.extend_from_slice(data);
        }
        let table = (header_len + body.len()) as u64;
        let mut out = vec![0x7F, b'E', b'L', b'F'];
        out.push(if is_64 { 2 } else { 1 });
        out.push(if big_endian { 2 } else { 1 });
        out.push(1);
        out.resize(16, 0);
        put(&mut out, 1, 2); // e_type ET_REL
        put(&mut out, 62, 2); // e_machine
        put(&mut out, 1, 4); // e_version
        put(&mut out, 0, word); // e_entry
        put(&mut out, 0, word); // e_phoff
        put(&mut out, table, word); // e_shoff
        put(&mut out, 0, 4); // e_flags
        put(&mut out, header_len as u64, 2); // e_ehsize
        put(&mut out, 0, 2); // e_phentsize
        put(&mut out, 0, 2); // e_phnum
        put(&mut out, entry as u64, 2); // e_shentsize
        put(&mut out, sections.len() as u64 + 2, 2); // e_shnum
        put(&mut out, 1, 2); // e_shstrndx
        assert_eq!(out.len(), header_len);
        out.extend_from_slice(&body);
        out.resize(out.len() + entry, 0); // the null section
        for (i, (offset, size)) in placed.iter().enumerate() {
            let start = out.len();
            put(&mut out, name_offsets[i], 4);
            put(&mut out, if i == 0 { 3 } else { 1 }, 4); // STRTAB / PROGBITS
            put(&mut out, 0, word); // flags
            put(&mut out, 0, word); // addr
            put(&mut out, *offset, word);
            put(&mut out, *size, word);
            out.resize(start + entry, 0);
        }
        out
    }

    #[test]
    fn finds_sections_in_every_class_and_byte_order() {
        for is_64 in [false, true] {
            for big_endian in [false, true] {
                let elf = build(
                    is_64,
                    big_endian,
                    &[(".text", b"code"), (".modinfo", b"license=GPL\0")],
                );
                assert_eq!(
                    section(&elf, ".modinfo"),
                    Ok(Some(&b"license=GPL\0"[..])),
                    "64-bit {is_64}, big-endian {big_endian}"
                );
                assert_eq!(section(&elf, ".text"), Ok(Some(&b"code"[..])));
                assert_eq!(section(&elf, ".data"), Ok(None));
            }
        }
    }

    #[test]
    fn malformed_headers_are_named() {
        let elf = build(true, false, &[(".modinfo", b"x=y\0")]);
        let err = section(&elf[..40], ".modinfo").expect_err("truncated header");
        assert_eq!(err.offset, 0x28);
        assert!(err.problem.contains("runs past the end"), "{err:?}");
        let err = section(b"MZ\x90\0", ".modinfo").expect_err("not ELF");
        assert!(err.problem.contains("not an ELF file"), "{err:?}");
        let mut bad_class = elf.clone();
        bad_class[4] = 9;
        assert_eq!(section(&bad_class, "x").expect_err("class").offset, 4);
        let err = section(&elf[..elf.len() - 1], ".modinfo").expect_err("short table");
        assert!(err.problem.contains("section header table"), "{err:?}");
    }

    proptest! {
        #[test]
        fn never_panics_on_mutations(
            is_64 in any::<bool>(),
            big_endian in any::<bool>(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in any::<usize>(),
        ) {
            let mut elf = build(is_64, big_endian, &[(".modinfo", b"name=x\0")]);
            for (at, value) in flips {
                let len = elf.len();
                elf[at % len] = value;
            }
            elf.truncate(cut % (elf.len() + 1));
            let _ = section(&elf, ".modinfo");
        }
    }
}
