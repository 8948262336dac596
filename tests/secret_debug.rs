//! `Debug` of a `SecretString` never copies the secret: a copy in a plain `String` would outlive
//! the zeroized original in freed heap memory. Counted with this binary's own allocator (one
//! test binary, so the counting allocator touches nothing else).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write;

use warren::secret::SecretString;

struct Counting;

thread_local! {
    // Per thread: the test harness's other threads do not count.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialized thread local
// without a destructor, so touching it never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A fixed buffer to format into, so formatting itself does not allocate.
struct StackBuf {
    bytes: [u8; 128],
    len: usize,
}

impl Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn debug_without_allocating(s: &SecretString) -> String {
    let mut buf = StackBuf { bytes: [0; 128], len: 0 };
    let before = ALLOCATIONS.with(Cell::get);
    write!(buf, "{s:?}").unwrap();
    let allocations = ALLOCATIONS.with(Cell::get) - before;
    let shown = String::from_utf8(buf.bytes[..buf.len].to_vec()).unwrap();
    assert_eq!(allocations, 0, "Debug allocated (a copy of the value?) while showing {shown}");
    shown
}

#[test]
fn debug_of_a_secret_string_allocates_nothing() {
    for (value, shown) in [
        ("hunter2-Sup3rSecret", "<redacted>"),
        ("literal:hunter2-Sup3rSecret", "<redacted>"),
        ("abc:hunter2-Sup3rSecret", "<redacted>"),
        ("FILE:/run/secrets/token", "FILE:<…>"),
        ("VAULT_KV2:secret/data/x#password", "VAULT_KV2:<…>"),
    ] {
        assert_eq!(debug_without_allocating(&SecretString::reference(value)), shown, "{value}");
        assert_eq!(debug_without_allocating(&SecretString::new(value)), "<redacted>", "{value}");
    }
}
