# The libsodium functions the native modules call, and nothing else (sodium.h).

cdef extern from "sodium.h" nogil:
    int sodium_init()
    size_t crypto_hash_sha256_BYTES
    size_t crypto_sign_BYTES
    size_t crypto_sign_PUBLICKEYBYTES
    size_t crypto_sign_SECRETKEYBYTES
    size_t crypto_sign_SEEDBYTES
    int crypto_hash_sha256(unsigned char *out, const unsigned char *msg, unsigned long long msg_len)
    int crypto_sign_detached(unsigned char *sig, unsigned long long *sig_len,
                             const unsigned char *msg, unsigned long long msg_len,
                             const unsigned char *sk)
    int crypto_sign_verify_detached(const unsigned char *sig, const unsigned char *msg,
                                    unsigned long long msg_len, const unsigned char *pk)
    int crypto_sign_seed_keypair(unsigned char *pk, unsigned char *sk, const unsigned char *seed)
    int sodium_memcmp(const void *b1, const void *b2, size_t len)
    void sodium_memzero(void *pnt, size_t len)
    void randombytes_buf(void *buf, size_t size)
