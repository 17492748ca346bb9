/* SPDX-License-Identifier: MIT */
/*
 * oplog.h - the one place where a teardown issues TLBI, DSB and ISB.
 *
 * Each helper executes its instruction and appends it to an in-memory log,
 * in program order. After a step the log is printed as TLBI/DSB/ISB records
 * (runs of evenly spaced TLBIs compressed losslessly: n= inc= user=), so the
 * host compares exactly what ran against the golden model.
 */
#ifndef OPLOG_H
#define OPLOG_H

#include <stdint.h>
#include "asm/tlbi.h"

enum dsb_opt { DSB_ISHST, DSB_ISH, DSB_NSHST, DSB_NSH, DSB_SY };

/* Issue and log. op_tlbi's xt is ignored for TLBI_VMALLE1IS and TLBI_VALE1IS_XZR. */
void op_tlbi(enum tlbi_op op, uint64_t xt);
void op_dsb(enum dsb_opt opt);
void op_isb(void);

/* Drop the log (start of a step). */
void oplog_reset(void);
/* Print the logged instructions as records and empty the log. */
void oplog_report(void);

/* Totals since oplog_totals_reset(), for SCNEND. */
struct oplog_totals {
	unsigned long tlbi, dsb, isb;
};
void oplog_totals_reset(void);
struct oplog_totals oplog_totals(void);

#endif /* OPLOG_H */
