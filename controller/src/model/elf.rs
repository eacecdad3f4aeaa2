//! Which machine an uploaded agent binary runs on, read from its ELF header alone: the
//! first 64 bytes are all an upload is judged by before its content is stored.

use super::package::Arch;

/// The size of an ELF64 header: the bytes `read_header` needs.
pub const HEADER_LEN: usize = 64;

const MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const CLASS_64: u8 = 2;
const DATA_LITTLE_ENDIAN: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// Why a file is not an agent binary the fleet can run, in words for the uploader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfRefusal {
    #[error("is empty: send the ocp-agent binary")]
    Empty,
    #[error("is not an ELF executable ({0} bytes, shorter than an ELF header)")]
    TooShort(usize),
    #[error("is not an ELF executable (no ELF magic number)")]
    NotElf,
    #[error("is a 32-bit ELF file: agents run as 64-bit executables")]
    Not64Bit,
    #[error("is a big-endian ELF file: agents run on little-endian x86_64 or aarch64")]
    BigEndian,
    #[error(
        "is an ELF file of type {0}, not an executable (ET_EXEC or ET_DYN): a relocatable \
         object or a core dump cannot run"
    )]
    NotExecutable(u16),
    #[error(
        "is an ELF executable for an unknown architecture (e_machine {0}): use x86_64 or aarch64"
    )]
    UnknownArch(u16),
}

/// The architecture of the executable whose first bytes are `head` (at least
/// [`HEADER_LEN`] of them unless the file is shorter).
pub fn read_header(head: &[u8]) -> Result<Arch, ElfRefusal> {
    if head.is_empty() {
        return Err(ElfRefusal::Empty);
    }
    if head.len() < MAGIC.len() || head[..MAGIC.len()] != MAGIC {
        return Err(ElfRefusal::NotElf);
    }
    if head.len() < HEADER_LEN {
        return Err(ElfRefusal::TooShort(head.len()));
    }
    if head[4] != CLASS_64 {
        return Err(ElfRefusal::Not64Bit);
    }
    if head[5] != DATA_LITTLE_ENDIAN {
        return Err(ElfRefusal::BigEndian);
    }
    let half = |at: usize| u16::from_le_bytes([head[at], head[at + 1]]);
    let kind = half(16);
    if kind != ET_EXEC && kind != ET_DYN {
        return Err(ElfRefusal::NotExecutable(kind));
    }
    match half(18) {
        EM_X86_64 => Ok(Arch::X86_64),
        EM_AARCH64 => Ok(Arch::Aarch64),
        other => Err(ElfRefusal::UnknownArch(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 little-endian header of `kind` for `machine`.
    fn header(kind: u16, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4] = CLASS_64;
        h[5] = DATA_LITTLE_ENDIAN;
        h[6] = 1;
        h[16..18].copy_from_slice(&kind.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn executables_of_both_architectures_are_read() {
        assert_eq!(read_header(&header(ET_EXEC, EM_X86_64)), Ok(Arch::X86_64));
        assert_eq!(read_header(&header(ET_DYN, EM_AARCH64)), Ok(Arch::Aarch64));
    }

    #[test]
    fn everything_else_is_refused_with_its_reason() {
        assert_eq!(read_header(b""), Err(ElfRefusal::Empty));
        assert_eq!(read_header(b"#!/bin/sh\n"), Err(ElfRefusal::NotElf));
        assert_eq!(read_header(b"\x7fEL"), Err(ElfRefusal::NotElf));
        assert_eq!(
            read_header(&header(ET_EXEC, EM_X86_64)[..20]),
            Err(ElfRefusal::TooShort(20))
        );
        let mut elf32 = header(ET_EXEC, 3);
        elf32[4] = 1;
        assert_eq!(read_header(&elf32), Err(ElfRefusal::Not64Bit));
        let mut big = header(ET_EXEC, EM_X86_64);
        big[5] = 2;
        assert_eq!(read_header(&big), Err(ElfRefusal::BigEndian));
        assert_eq!(
            read_header(&header(1, EM_X86_64)),
            Err(ElfRefusal::NotExecutable(1))
        );
        assert_eq!(
            read_header(&header(ET_EXEC, 40)),
            Err(ElfRefusal::UnknownArch(40))
        );
    }
}
