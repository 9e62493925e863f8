//! The Cortex-M4F program: runs [`pagoda_embedded::run`] on bare metal and reports through
//! semihosting (text on the host's stdout, the exit status through `SYS_EXIT`: 0 when every
//! check passed, 1 otherwise).
//!
//! Measurements (`# ` lines, not compared with the host): SysTick counts around each
//! measured call, which under `qemu -icount shift=0` (1 instruction = 1 ns of virtual time,
//! SysTick on the 25 MHz core clock = 40 ns per tick) are instruction counts; and the stack
//! high-water mark, by painting the free RAM below the stack before the run.
//!
//! On the host (`cargo run --target x86_64-unknown-linux-gnu`) the same library run prints
//! the same lines to stdout, without measurements.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod bare_metal {
    use core::fmt::Write;

    use cortex_m::peripheral::syst::SystClkSource;
    use cortex_m::peripheral::SYST;
    use cortex_m_rt::entry;
    use cortex_m_semihosting::{debug, hio};
    use pagoda_embedded::{run, Arena, Stopwatch};

    /// Virtual nanoseconds per SysTick tick: the MPS2 core clock (SYSCLK) is 25 MHz.
    const NS_PER_TICK: u32 = 40;
    /// SysTick is a 24-bit down-counter.
    const SYST_MASK: u32 = 0x00FF_FFFF;
    /// The pattern painted below the stack.
    const PAINT: u32 = 0xDEAD_BEEF;
    /// How far below the current stack pointer the paint reaches (bytes).
    const PAINT_WINDOW: usize = 64 * 1024;
    /// Bytes left unpainted right below the stack pointer (the painting code's own frame).
    const PAINT_GUARD: usize = 256;

    /// SysTick as a [`Stopwatch`]: free-running on the core clock, never interrupting.
    struct SysTickStopwatch {
        start: u32,
    }

    impl SysTickStopwatch {
        fn new(mut syst: SYST) -> Self {
            syst.set_clock_source(SystClkSource::Core);
            syst.set_reload(SYST_MASK);
            syst.clear_current();
            syst.enable_counter();
            SysTickStopwatch { start: 0 }
        }
    }

    impl Stopwatch for SysTickStopwatch {
        fn start(&mut self) {
            self.start = SYST::get_current();
        }

        fn elapsed(&mut self) -> Option<u32> {
            let ticks = self.start.wrapping_sub(SYST::get_current()) & SYST_MASK;
            Some(ticks * NS_PER_TICK)
        }

        fn unit(&self) -> &'static str {
            "instructions"
        }
    }

    extern "C" {
        /// cortex-m-rt: first address after `.bss`/`.data`/`.uninit` (the heap start, unused).
        static __sheap: u32;
    }

    /// The lowest address the paint covers, or `None` if there is no room to paint.
    fn paint_stack() -> Option<usize> {
        // Only the address of the linker symbol is taken (safe); it is never read.
        let heap_start = core::ptr::addr_of!(__sheap) as usize;
        let sp = cortex_m::register::msp::read() as usize;
        let top = sp.checked_sub(PAINT_GUARD)? & !3;
        let bottom = top.saturating_sub(PAINT_WINDOW).max(heap_start.next_multiple_of(4));
        let mut p = bottom;
        while p < top {
            // SAFETY: [bottom, top) lies between the end of the program's statics and the
            // current stack pointer (minus a guard for this function's own frame): RAM that
            // no Rust object occupies yet. Volatile so the stores are not elided.
            unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
            p += 4;
        }
        Some(bottom)
    }

    /// Bytes of stack used since painting: from the first overwritten word to the stack top.
    fn stack_high_water(bottom: usize, stack_top: usize) -> usize {
        let mut p = bottom;
        // SAFETY: the same painted region as in `paint_stack`, word-aligned; reading it
        // races with nothing (single core, no interrupts enabled).
        while p < stack_top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
            p += 4;
        }
        stack_top - p
    }

    /// Prints the stopwatch's own overhead and its reading for a loop of a known number of
    /// instructions (`delay(n)` runs `n + 1` iterations of `subs; bne`), so the
    /// instructions-per-tick assumption is checked on every run.
    fn calibrate(out: &mut impl Write, watch: &mut SysTickStopwatch) -> core::fmt::Result {
        const ITERATIONS: u32 = 50_000;
        watch.start();
        let empty = watch.elapsed().unwrap_or(0);
        watch.start();
        cortex_m::asm::delay(ITERATIONS - 1);
        let looped = watch.elapsed().unwrap_or(0);
        writeln!(
            out,
            "# calibration: SysTick ticks x {NS_PER_TICK} under qemu -icount shift=0; \
             empty measurement {empty}, a loop of {} instructions measures {looped}",
            2 * ITERATIONS
        )
    }

    #[entry]
    fn main() -> ! {
        let stack_top = cortex_m::register::msp::read() as usize;
        let painted = paint_stack();
        let peripherals = cortex_m::Peripherals::take();
        let mut out = hio::hstdout().ok();
        let status = match (peripherals, out.as_mut()) {
            (Some(p), Some(out)) => {
                let mut watch = SysTickStopwatch::new(p.SYST);
                let _ = calibrate(out, &mut watch);
                // The static slab: pool entries, KV pages and buffers live in .bss.
                let arena = cortex_m::singleton!(: Arena = Arena::new());
                let result = match arena {
                    Some(arena) => run(arena, out, &mut watch),
                    None => Err(pagoda_embedded::Error::Check("arena taken once")),
                };
                if let Some(bottom) = painted {
                    let used = stack_high_water(bottom, stack_top);
                    let _ = writeln!(out, "# stack high-water: {used} bytes (main onwards)");
                }
                match result {
                    Ok(()) => debug::EXIT_SUCCESS,
                    Err(e) => {
                        let _ = writeln!(out, "FAILED: {e}");
                        debug::EXIT_FAILURE
                    }
                }
            }
            _ => debug::EXIT_FAILURE,
        };
        debug::exit(status);
        #[allow(clippy::empty_loop)]
        loop {}
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        if let Ok(mut out) = hio::hstdout() {
            let _ = writeln!(out, "PANIC: {info}");
        }
        debug::exit(debug::EXIT_FAILURE);
        #[allow(clippy::empty_loop)]
        loop {}
    }
}

/// Host build: the same run, printed to stdout (exit status 1 on a failed check).
#[cfg(not(target_os = "none"))]
fn main() {
    let mut arena = Box::new(pagoda_embedded::Arena::new());
    let mut out = String::new();
    let result = pagoda_embedded::run(&mut arena, &mut out, &mut pagoda_embedded::NoStopwatch);
    print!("{out}");
    if let Err(e) = result {
        println!("FAILED: {e}");
        std::process::exit(1);
    }
}
