/*
 * coro_x86_64.S — the context switch behind coro.c (x86-64 System V).
 *
 * A context is a stack pointer. Switching pushes what the ABI says a callee
 * must preserve (rbx, rbp, r12-r15, the MXCSR and the x87 control word),
 * stores rsp, loads the other context's rsp and pops the same layout. No
 * signal mask, no syscall. The saved frame, from the saved rsp upwards:
 *
 *   0(%rsp)  MXCSR (4 bytes)      4(%rsp)  x87 control word (2 bytes)
 *   8  r15   16  r14   24  r13   32  r12   40  rbx   48  rbp
 *   56 return address
 *
 * coro.c builds the same frame by hand for a new coroutine, with the
 * return address pointing at rusm__coro_trampoline and rbx = the coroutine,
 * r12 = entry, r13 = arg. Keep the two in step (RUSM__CORO_FRAME_* there).
 */

        .text

/* void rusm__coro_switch(void **save_sp, void *new_sp) */
        .globl  rusm__coro_switch
        .hidden rusm__coro_switch
        .type   rusm__coro_switch, @function
        .p2align 4
rusm__coro_switch:
        .cfi_startproc
        pushq   %rbp
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbp, 0
        pushq   %rbx
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbx, 0
        pushq   %r12
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r12, 0
        pushq   %r13
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r13, 0
        pushq   %r14
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r14, 0
        pushq   %r15
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r15, 0
        subq    $8, %rsp
        .cfi_adjust_cfa_offset 8
        /* Control bits of MXCSR and the x87 CW are callee-saved: each
         * context keeps its own rounding mode and exception masks. */
        stmxcsr (%rsp)
        fnstcw  4(%rsp)

        movq    %rsp, (%rdi)
        movq    %rsi, %rsp
        /* Now on the other stack. Its frame has the same layout, so the
         * CFI above still describes it: a debugger stopped below here
         * unwinds into the context being resumed. */

        ldmxcsr (%rsp)
        fldcw   4(%rsp)
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
        popq    %r15
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r15
        popq    %r14
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r14
        popq    %r13
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r13
        popq    %r12
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r12
        popq    %rbx
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbx
        popq    %rbp
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbp
        ret
        .cfi_endproc
        .size   rusm__coro_switch, .-rusm__coro_switch

/*
 * First code a new coroutine runs, entered by the `ret` above with
 * rsp 16-byte aligned, rbx = coroutine, r12 = entry, r13 = arg.
 * rusm__coro_boot(c) finishes the sanitizer side of the switch, then
 * entry(arg) runs. entry must end in rusm__coro_finish(); returning is a
 * contract violation and traps rather than running off the stack top.
 */
        .globl  rusm__coro_trampoline
        .hidden rusm__coro_trampoline
        .type   rusm__coro_trampoline, @function
        .p2align 4
rusm__coro_trampoline:
        .cfi_startproc
        /* Outermost frame: tell unwinders there is no caller. */
        .cfi_undefined %rip
        movq    %rbx, %rdi
        call    rusm__coro_boot@PLT
        movq    %r13, %rdi
        call    *%r12
        ud2
        .cfi_endproc
        .size   rusm__coro_trampoline, .-rusm__coro_trampoline

        .section .note.GNU-stack,"",@progbits
