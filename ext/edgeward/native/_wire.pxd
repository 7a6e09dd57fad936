# Protobuf wire-format readers and writers for the native envelope codec (pgproto frb.pxd pattern).
#
# A Reader is a window [ptr, end) over bytes that the caller keeps alive; every read checks the
# window first, so malformed or truncated input can never make us read past it. Readers return
# 0 on success and -1 on malformed input, with no Python exception: the caller turns -1 into
# invalid_envelope (field "message"). The rules copy the protobuf runtime the pure twin uses
# (upb), which tests/test_envelope_props.py checks byte for byte:
# - a varint has at most 10 bytes; bits beyond 64 in the 10th byte are dropped;
# - a tag has at most 5 bytes and fits in 32 bits; field number 0 is malformed in a message
#   (the caller checks) but skipped like any other inside an unknown group, as upb does;
# - a length has at most 5 bytes and must fit in what is left of the enclosing message;
# - unknown fields of wire types 0, 1, 2, 5 are skipped; groups (3 ... 4) are skipped when their
#   end tag matches and they nest at most DEFAULT_DEPTH deep (an embedded message counts as one
#   level); an unmatched end-group tag and wire types 6 and 7 are malformed.

from libc.stdint cimport uint32_t, uint64_t


cdef enum:
    WT_VARINT = 0
    WT_I64 = 1
    WT_LEN = 2
    WT_SGROUP = 3
    WT_EGROUP = 4
    WT_I32 = 5
    # upb's default recursion limit (kUpb_WireFormat_DefaultDepthLimit).
    DEFAULT_DEPTH = 100
    # The largest length upb accepts is INT32_MAX - 1.
    MAX_LENGTH = 0x7FFFFFFE


cdef struct Reader:
    const unsigned char *ptr
    const unsigned char *end


cdef inline int read_varint(Reader *r, uint64_t *out) noexcept nogil:
    cdef const unsigned char *p = r.ptr
    cdef uint64_t value = 0
    cdef uint64_t byte
    cdef unsigned int shift = 0
    while shift < 70:  # 10 bytes of 7 bits
        if p >= r.end:
            return -1
        byte = p[0]
        p += 1
        # (byte & 0x7f) << 63 keeps only the lowest bit: the protobuf runtime drops the rest.
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            r.ptr = p
            out[0] = value
            return 0
        shift += 7
    return -1


cdef inline int read_tag(Reader *r, uint32_t *out) noexcept nogil:
    cdef const unsigned char *p = r.ptr
    cdef uint64_t value = 0
    cdef uint64_t byte
    cdef unsigned int shift = 0
    while shift < 35:  # 5 bytes of 7 bits
        if p >= r.end:
            return -1
        byte = p[0]
        p += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if (value >> 32) != 0:
                return -1
            r.ptr = p
            out[0] = <uint32_t>value
            return 0
        shift += 7
    return -1


cdef inline int read_length(Reader *r, Py_ssize_t *out) noexcept nogil:
    cdef Reader probe = r[0]
    cdef uint64_t value = 0
    cdef uint64_t byte
    cdef unsigned int shift = 0
    while shift < 35:  # 5 bytes of 7 bits
        if probe.ptr >= probe.end:
            return -1
        byte = probe.ptr[0]
        probe.ptr += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value > MAX_LENGTH or value > <uint64_t>(probe.end - probe.ptr):
                return -1
            r.ptr = probe.ptr
            out[0] = <Py_ssize_t>value
            return 0
        shift += 7
    return -1


cdef inline int skip_field(Reader *r, uint32_t tag, int depth) noexcept nogil:
    # Skips the value of an unknown field whose tag was just read. ``depth`` is how many more
    # levels of nesting the enclosing message allows. Groups are walked iteratively with the
    # field numbers of the open groups on a stack, so the C stack stays flat.
    cdef uint32_t open_groups[DEFAULT_DEPTH]
    cdef int n_open = 0
    cdef uint64_t ignored
    cdef Py_ssize_t length
    cdef uint32_t wire_type
    while True:
        wire_type = tag & 7
        if wire_type == WT_VARINT:
            if read_varint(r, &ignored) < 0:
                return -1
        elif wire_type == WT_I64:
            if r.end - r.ptr < 8:
                return -1
            r.ptr += 8
        elif wire_type == WT_LEN:
            if read_length(r, &length) < 0:
                return -1
            r.ptr += length
        elif wire_type == WT_I32:
            if r.end - r.ptr < 4:
                return -1
            r.ptr += 4
        elif wire_type == WT_SGROUP:
            if n_open >= depth or n_open >= DEFAULT_DEPTH:
                return -1
            open_groups[n_open] = tag >> 3
            n_open += 1
        elif wire_type == WT_EGROUP:
            if n_open == 0 or open_groups[n_open - 1] != tag >> 3:
                return -1
            n_open -= 1
        else:
            return -1
        if n_open == 0:
            return 0
        if read_tag(r, &tag) < 0:  # also an unterminated group at the end of its message
            return -1


cdef inline bint utf8_valid(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    # Strict UTF-8 (RFC 3629), as protobuf requires of proto3 strings: no overlong forms,
    # no surrogates (U+D800..U+DFFF), nothing above U+10FFFF.
    cdef Py_ssize_t i = 0
    cdef unsigned char c, c1
    while i < n:
        c = p[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xC2:  # a lone continuation byte, or 0xC0/0xC1 (overlong)
            return False
        if c < 0xE0:
            if n - i < 2 or (p[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif c < 0xF0:
            if n - i < 3:
                return False
            c1 = p[i + 1]
            if (c1 & 0xC0) != 0x80 or (p[i + 2] & 0xC0) != 0x80:
                return False
            if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 >= 0xA0):  # overlong / surrogate
                return False
            i += 3
        elif c < 0xF5:
            if n - i < 4:
                return False
            c1 = p[i + 1]
            if (c1 & 0xC0) != 0x80 or (p[i + 2] & 0xC0) != 0x80 or (p[i + 3] & 0xC0) != 0x80:
                return False
            if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 >= 0x90):  # overlong / > U+10FFFF
                return False
            i += 4
        else:
            return False
    return True


cdef inline Py_ssize_t varint_size(uint64_t value) noexcept nogil:
    cdef Py_ssize_t n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


cdef inline unsigned char *put_varint(unsigned char *w, uint64_t value) noexcept nogil:
    while value >= 0x80:
        w[0] = <unsigned char>((value & 0x7F) | 0x80)
        w += 1
        value >>= 7
    w[0] = <unsigned char>value
    return w + 1


cdef inline unsigned char *put_u32be(unsigned char *w, uint32_t value) noexcept nogil:
    w[0] = <unsigned char>(value >> 24)
    w[1] = <unsigned char>(value >> 16)
    w[2] = <unsigned char>(value >> 8)
    w[3] = <unsigned char>value
    return w + 4


cdef inline unsigned char *put_u64be(unsigned char *w, uint64_t value) noexcept nogil:
    cdef int i
    for i in range(8):
        w[i] = <unsigned char>(value >> (56 - 8 * i))
    return w + 8
