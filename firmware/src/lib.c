// SPDX-License-Identifier: MIT
/*
 * lib.c - the freestanding C library subset: mem*, str*, a vsnprintf that
 * knows what report() needs, and the number / key=value parsers that the
 * command handlers share. No allocation, no locale, no floating point.
 * Everything here is position-independent (no pointer tables), so head.c may
 * use it with the MMU off.
 */
#include "shootdown.h"

void *memset(void *s, int c, size_t n)
{
	unsigned char *p = s;

	while (n--)
		*p++ = (unsigned char)c;
	return s;
}

void *memcpy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	while (n--)
		*d++ = *s++;
	return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	if (d <= s || d >= s + n)
		return memcpy(dst, src, n);
	while (n--)
		d[n] = s[n];
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;

	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}

size_t strlen(const char *s)
{
	const char *p = s;

	while (*p)
		p++;
	return (size_t)(p - s);
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return (unsigned char)*a - (unsigned char)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (unsigned char)*a - (unsigned char)*b;
		if (!*a)
			return 0;
	}
	return 0;
}

/* ---- vsnprintf ---------------------------------------------------------- */

struct out {
	char *buf;
	size_t size, len;	/* len counts what would have been written */
};

static void out_c(struct out *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

static void out_num(struct out *o, unsigned long long v, unsigned base, bool neg,
		    unsigned width, bool zero, bool left)
{
	char tmp[24];
	unsigned n = 0, len;

	do {
		unsigned d = (unsigned)(v % base);

		tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= base;
	} while (v);
	len = n + neg;
	if (neg && zero)
		out_c(o, '-');
	for (; !left && len < width; width--)
		out_c(o, zero ? '0' : ' ');
	if (neg && !zero)
		out_c(o, '-');
	while (n)
		out_c(o, tmp[--n]);
	for (; left && len < width; width--)
		out_c(o, ' ');
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct out o = { buf, size, 0 };

	for (; fmt && *fmt; fmt++) {
		bool zero = false, left = false;
		unsigned width = 0, lng = 0;

		if (*fmt != '%') {
			out_c(&o, *fmt);
			continue;
		}
		fmt++;
		for (;; fmt++) {
			if (*fmt == '0')
				zero = true;
			else if (*fmt == '-')
				left = true;
			else
				break;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (unsigned)(*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z')
			lng += *fmt++ == 'z' ? 2 : 1;
		zero = zero && !left;

		switch (*fmt) {
		case 'd':
		case 'i': {
			long long v = lng ? va_arg(ap, long long) : va_arg(ap, int);
			unsigned long long mag = v < 0 ? 0ULL - (unsigned long long)v
						       : (unsigned long long)v;

			out_num(&o, mag, 10, v < 0, width, zero, left);
			break;
		}
		case 'u':
		case 'x':
		case 'X': {
			unsigned long long v = lng ? va_arg(ap, unsigned long long)
						   : va_arg(ap, unsigned int);

			out_num(&o, v, *fmt == 'u' ? 10 : 16, false, width, zero, left);
			break;
		}
		case 'p':
			out_c(&o, '0');
			out_c(&o, 'x');
			out_num(&o, (uintptr_t)va_arg(ap, void *), 16, false, width, zero, left);
			break;
		case 'c':
			out_c(&o, (char)va_arg(ap, int));
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			unsigned n;

			if (!s)
				s = "(null)";
			n = (unsigned)strlen(s);
			for (; !left && n < width; width--)
				out_c(&o, ' ');
			while (*s)
				out_c(&o, *s++);
			for (; left && n < width; width--)
				out_c(&o, ' ');
			break;
		}
		case '%':
			out_c(&o, '%');
			break;
		case '\0':
			fmt--;	/* a lone '%' at the end: stop cleanly */
			break;
		default:	/* unknown conversion: print it as is */
			out_c(&o, '%');
			out_c(&o, *fmt);
			break;
		}
	}
	if (size)
		buf[o.len < size ? o.len : size - 1] = '\0';
	return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}

/* ---- parsing ------------------------------------------------------------ */

int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	unsigned base = 10, digits = 0;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	for (; *s && *s != ' '; s++, digits++) {
		unsigned d;

		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (unsigned)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = (unsigned)(*s - 'A' + 10);
		else
			return -1;
		if (v > (UINT64_MAX - d) / base)
			return -1;	/* overflow */
		v = v * base + d;
	}
	if (!digits)
		return -1;
	*out = v;
	return 0;
}

/* The value of key=... among the tokens after the first word, or NULL. */
static const char *arg_find(const char *line, const char *key)
{
	size_t klen = strlen(key);
	const char *p = line;

	while (*p && *p != ' ')	/* skip the command word */
		p++;
	while (*p) {
		while (*p == ' ')
			p++;
		if (!strncmp(p, key, klen) && p[klen] == '=')
			return p + klen + 1;
		while (*p && *p != ' ')
			p++;
	}
	return NULL;
}

int arg_u64(const char *line, const char *key, uint64_t *out)
{
	const char *v = arg_find(line, key);

	if (!v)
		return -1;
	return parse_u64(v, out) ? -2 : 0;
}

int arg_str(const char *line, const char *key, char *buf, size_t size)
{
	const char *v = arg_find(line, key);
	size_t n = 0;

	if (!v)
		return -1;
	while (v[n] && v[n] != ' ')
		n++;
	if (n + 1 > size)
		return -2;
	memcpy(buf, v, n);
	buf[n] = '\0';
	return 0;
}
