/* Ends one instantiation of ext/lanes_ops.h: undefines the macros ext/lanes.h set for it. */
#undef CS_REAL
#undef CS_NAME
#undef CS_EXP_AFFINE
#undef CS_TANH
#undef CS_CELL
#undef CS_ADAGRAD
