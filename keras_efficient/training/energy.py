"""A per-operation energy table (Horowitz, ISSCC 2014, 45 nm, 0.9 V) and MAC energy ESTIMATES.

Measured points from the paper's table (pJ per operation):

    integer add:   8 bit 0.03, 16 bit 0.05, 32 bit 0.1
    integer mult:  8 bit 0.2,                32 bit 3.1
    float add:     16 bit 0.4,  32 bit 0.9
    float mult:    16 bit 1.1,  32 bit 3.7
    SRAM read (64 bit):  8 KB 10,  32 KB 20,  1 MB 100;   DRAM (64 bit) 1300-2600

Model used here (an estimate, not a measurement):
  * float32 MAC = 3.7 + 0.9 pJ;
  * integer a×b-bit multiply = 0.2 pJ · (a·b)/64 (multiplier area and energy grow
    with the product of the widths; gives 3.2 pJ at 32×32 against the measured 3.1),
    integer add of n bits = 0.03 pJ · n/8 (0.12 pJ at 32 bits against 0.1), with the
    accumulator n = min(a + b, 32);
  * memory: one operand of max(a, b) bits read from an 8 KB SRAM per MAC,
    10 pJ per 64 bits (operand reuse in registers is not modelled; DRAM traffic is
    not modelled).
With this model a float32 MAC costs 9.6 pJ and an 8×8-bit MAC 1.51 pJ (84% less),
close to the "about 80%" the E²-Train paper quotes for 32 → 8 bits.
"""

__all__ = ["HOROWITZ_45NM_PJ", "mac_energy_pj"]

#: Horowitz (ISSCC 2014), 45 nm, pJ per operation.
HOROWITZ_45NM_PJ = {
    "int8_add": 0.03, "int16_add": 0.05, "int32_add": 0.1,
    "int8_mult": 0.2, "int32_mult": 3.1,
    "fp16_add": 0.4, "fp32_add": 0.9, "fp16_mult": 1.1, "fp32_mult": 3.7,
    "sram_8kb_64bit": 10.0, "sram_32kb_64bit": 20.0, "sram_1mb_64bit": 100.0,
    "dram_64bit": 1300.0,
}

def _sram_pj(bits):
    return HOROWITZ_45NM_PJ["sram_8kb_64bit"] * bits / 64.0


def mac_energy_pj(precision):
    """Estimated energy of one MAC (compute + one operand read) for a precision label.

    Args:
      precision: "fp32" or "int{a}x{b}" (e.g. "int8x8", "int16x8", "int4x10").

    Returns:
      pJ per MAC (float).
    """
    if precision == "fp32":
        return HOROWITZ_45NM_PJ["fp32_mult"] + HOROWITZ_45NM_PJ["fp32_add"] + _sram_pj(32)
    if not precision.startswith("int") or "x" not in precision:
        raise ValueError("Unknown precision {!r}: expected 'fp32' or 'int<a>x<b>'.".format(
            precision))
    a, b = (int(v) for v in precision[3:].split("x"))
    mult = HOROWITZ_45NM_PJ["int8_mult"] * a * b / 64.0
    add = HOROWITZ_45NM_PJ["int8_add"] * min(a + b, 32) / 8.0
    return mult + add + _sram_pj(max(a, b))
