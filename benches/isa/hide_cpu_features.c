// LD_PRELOAD shim: run a process as if its CPU lacked the newer vector instructions.
//
// kroute, PyTorch and ONNX Runtime all pick their kernels at run time from CPUID. Linux
// can make the CPUID instruction fault (arch_prctl ARCH_SET_CPUID, on CPUs with the
// `cpuid_fault` flag, KVM guests included); this shim turns that on before main, answers
// each faulting CPUID itself with the real values less the hidden feature bits, and steps
// over the instruction. The instructions still work, but no engine asks for them: each
// runs the kernels it runs on the older CPU, on this box's cores.
//
// HIDE_CPU_FEATURES picks what to hide:
//   avx2  AVX-512, AVX-VNNI and AMX: an AVX2-only CPU (Zen 2/3, Haswell to Comet Lake).
//   sse   AVX, AVX2, FMA and F16C as well: the x86-64 baseline, SSE only.
//
// Use it through benches/isa/as_cpu.sh, which builds it.
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define BIT(n) (1u << (n))

enum { EAX, EBX, ECX, EDX };

static int hide_avx;

static int allow_cpuid(int allowed) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, allowed); }

static void hide_features(unsigned leaf, unsigned subleaf, unsigned regs[4]) {
    if (leaf == 1 && hide_avx) {
        // FMA, AVX, F16C.
        regs[ECX] &= ~(BIT(12) | BIT(28) | BIT(29));
    } else if (leaf == 7 && subleaf == 0) {
        // AVX512 F, DQ, IFMA, PF, ER, CD, BW, VL.
        regs[EBX] &= ~(BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31));
        if (hide_avx) regs[EBX] &= ~BIT(5); // AVX2
        // AVX512 VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ.
        regs[ECX] &= ~(BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14));
        // AVX512 4VNNIW, 4FMAPS, VP2INTERSECT, FP16; AMX BF16, TILE, INT8.
        regs[EDX] &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25));
    } else if (leaf == 7 && subleaf == 1) {
        // AVX-VNNI, AVX512 BF16, AMX FP16, AVX-IFMA.
        regs[EAX] &= ~(BIT(4) | BIT(5) | BIT(21) | BIT(23));
        // AVX-VNNI-INT8, AVX-NE-CONVERT, AMX COMPLEX, AVX-VNNI-INT16, AVX10.
        regs[EDX] &= ~(BIT(4) | BIT(5) | BIT(8) | BIT(10) | BIT(19));
    }
}

static void on_sigsegv(int sig, siginfo_t *info, void *context) {
    (void)sig;
    greg_t *gregs = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)gregs[REG_RIP];
    // A faulting CPUID is a general-protection fault (SI_KERNEL); anything else is a real
    // crash: restore the default action and let the instruction fault again.
    if (info->si_code != SI_KERNEL || ip[0] != 0x0f || ip[1] != 0xa2) {
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    unsigned leaf = (unsigned)gregs[REG_RAX], subleaf = (unsigned)gregs[REG_RCX];
    unsigned regs[4];
    allow_cpuid(1);
    __cpuid_count(leaf, subleaf, regs[EAX], regs[EBX], regs[ECX], regs[EDX]);
    allow_cpuid(0);
    hide_features(leaf, subleaf, regs);
    gregs[REG_RAX] = regs[EAX];
    gregs[REG_RBX] = regs[EBX];
    gregs[REG_RCX] = regs[ECX];
    gregs[REG_RDX] = regs[EDX];
    gregs[REG_RIP] += 2;
}

__attribute__((constructor)) static void install(void) {
    const char *level = getenv("HIDE_CPU_FEATURES");
    if (level == NULL || (strcmp(level, "avx2") != 0 && strcmp(level, "sse") != 0)) {
        fprintf(stderr, "hide_cpu_features: set HIDE_CPU_FEATURES to avx2 or sse\n");
        exit(2);
    }
    hide_avx = strcmp(level, "sse") == 0;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigsegv;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, NULL) != 0 || allow_cpuid(0) != 0) {
        // Without CPUID faulting every engine would silently use all it has: refuse.
        perror("hide_cpu_features: cannot make CPUID fault (needs the cpuid_fault CPU flag)");
        exit(3);
    }
}
