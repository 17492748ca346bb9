// SPDX-License-Identifier: MIT
/*
 * crc32.c - CRC-32 as zlib.crc32 computes it (IEEE 802.3: reflected
 * polynomial 0xedb88320, initial value and final XOR 0xffffffff).
 * Bitwise, no table: records are short and the table would have to be built
 * or stored; 8 steps per byte cost nothing next to the UART.
 */
#include "shootdown.h"

uint32_t crc32_update(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
	}
	return ~crc;
}
