// SPDX-License-Identifier: MIT
/*
 * fdt.c - the one fact the firmware needs from QEMU's device tree: how much
 * RAM there is. QEMU -kernel with an ELF image puts the DTB at the bottom of
 * RAM (0x40000000, which the image leaves free). Flattened devicetree format:
 * devicetree specification v0.4, chapter 5 (all fields big-endian).
 */
#include "core.h"

#define FDT_MAGIC	0xd00dfeedu
#define FDT_BEGIN_NODE	1
#define FDT_END_NODE	2
#define FDT_PROP	3
#define FDT_NOP		4
#define FDT_END		9

static uint32_t be32(const void *p)
{
	const unsigned char *b = p;

	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint64_t be64(const void *p)
{
	return (uint64_t)be32(p) << 32 | be32((const char *)p + 4);
}

/*
 * Size of the first RAM bank of the /memory node whose range starts at
 * base, or 0 if the DTB is missing or has none. Assumes the root's
 * #address-cells = #size-cells = 2, as on QEMU virt (checked).
 */
uint64_t fdt_ram_size(const void *fdt, uint64_t base)
{
	const char *blob = fdt, *strings, *p, *end;
	int depth = 0;
	bool in_memory = false, cells_ok = true;

	if (be32(blob) != FDT_MAGIC || be32(blob + 4) > 0x100000)
		return 0;
	p = blob + be32(blob + 8);		/* off_dt_struct */
	strings = blob + be32(blob + 12);	/* off_dt_strings */
	end = p + be32(blob + 36);		/* size_dt_struct */

	while (p < end) {
		uint32_t tok = be32(p);

		p += 4;
		if (tok == FDT_BEGIN_NODE) {
			depth++;
			in_memory = depth == 2 && !strncmp(p, "memory", 6);
			p += (strlen(p) + 4) & ~3UL;	/* name, NUL, pad to 4 */
		} else if (tok == FDT_END_NODE) {
			depth--;
			in_memory = false;
		} else if (tok == FDT_PROP) {
			uint32_t len = be32(p), nameoff = be32(p + 4);
			const char *name = strings + nameoff, *val = p + 8;

			if (depth == 1 && (!strcmp(name, "#address-cells") ||
					   !strcmp(name, "#size-cells")))
				cells_ok = cells_ok && len == 4 && be32(val) == 2;
			if (in_memory && cells_ok && !strcmp(name, "reg") && len >= 16 &&
			    be64(val) == base)
				return be64(val + 8);
			p += 8 + ((len + 3) & ~3u);
		} else if (tok == FDT_END) {
			break;
		} else if (tok != FDT_NOP) {
			return 0;	/* corrupt */
		}
	}
	return 0;
}
