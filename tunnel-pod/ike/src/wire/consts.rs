//! IANA "Internet Key Exchange Version 2 (IKEv2) Parameters" as newtype integers: an unknown
//! value is still a value and round-trips.

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident($repr:ty) { $($(#[$cm:meta])* $c:ident = $v:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $repr);
        impl $name {
            $($(#[$cm])* pub const $c: $name = $name($v);)*
            /// Every value this crate has a name for.
            pub const ALL: &'static [$name] = &[$($name::$c),*];
            /// The IANA name, or `None` for a value this crate has no name for.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($v => Some(stringify!($c)),)*
                    _ => None,
                }
            }
        }
        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }
        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Debug::fmt(self, f)
            }
        }
    };
}

wire_enum!(
    /// RFC 7296 §3.1 Exchange Type.
    ExchangeType(u8) {
        IKE_SA_INIT = 34,
        IKE_AUTH = 35,
        CREATE_CHILD_SA = 36,
        INFORMATIONAL = 37,
    }
);

wire_enum!(
    /// RFC 7296 §3.2 Next Payload / payload type.
    PayloadType(u8) {
        NONE = 0,
        SA = 33,
        KE = 34,
        IDI = 35,
        IDR = 36,
        CERT = 37,
        CERTREQ = 38,
        AUTH = 39,
        NONCE = 40,
        NOTIFY = 41,
        DELETE = 42,
        VENDOR_ID = 43,
        TSI = 44,
        TSR = 45,
        SK = 46,
        CP = 47,
        EAP = 48,
        /// RFC 7383
        SKF = 53,
    }
);

wire_enum!(
    /// RFC 7296 §3.3.1 Protocol ID (SA proposals, Notify, Delete).
    ProtocolId(u8) {
        NONE = 0,
        IKE = 1,
        AH = 2,
        ESP = 3,
    }
);

wire_enum!(
    /// RFC 7296 §3.3.2 Transform Type.
    TransformType(u8) {
        ENCR = 1,
        PRF = 2,
        INTEG = 3,
        /// Diffie-Hellman group (renamed "Key Exchange Method" by RFC 9370).
        DH = 4,
        ESN = 5,
    }
);

/// Transform IDs (RFC 7296 §3.3.2 and the IANA registries); their meaning depends on the type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct TransformId(pub u16);

impl TransformId {
    // ENCR
    pub const ENCR_3DES: TransformId = TransformId(3);
    pub const ENCR_NULL: TransformId = TransformId(11);
    pub const ENCR_AES_CBC: TransformId = TransformId(12);
    pub const ENCR_AES_CTR: TransformId = TransformId(13);
    pub const ENCR_AES_GCM_8: TransformId = TransformId(18);
    pub const ENCR_AES_GCM_12: TransformId = TransformId(19);
    pub const ENCR_AES_GCM_16: TransformId = TransformId(20);
    pub const ENCR_CHACHA20_POLY1305: TransformId = TransformId(28);
    // PRF
    pub const PRF_HMAC_SHA1: TransformId = TransformId(2);
    pub const PRF_HMAC_SHA2_256: TransformId = TransformId(5);
    pub const PRF_HMAC_SHA2_384: TransformId = TransformId(6);
    pub const PRF_HMAC_SHA2_512: TransformId = TransformId(7);
    // INTEG
    pub const AUTH_NONE: TransformId = TransformId(0);
    pub const AUTH_HMAC_SHA1_96: TransformId = TransformId(2);
    pub const AUTH_HMAC_SHA2_256_128: TransformId = TransformId(12);
    pub const AUTH_HMAC_SHA2_384_192: TransformId = TransformId(13);
    pub const AUTH_HMAC_SHA2_512_256: TransformId = TransformId(14);
    // DH
    pub const DH_NONE: TransformId = TransformId(0);
    pub const DH_MODP1024: TransformId = TransformId(2);
    pub const DH_MODP1536: TransformId = TransformId(5);
    pub const DH_MODP2048: TransformId = TransformId(14);
    pub const DH_ECP256: TransformId = TransformId(19);
    pub const DH_ECP384: TransformId = TransformId(20);
    pub const DH_CURVE25519: TransformId = TransformId(31);
    // ESN
    pub const ESN_NO: TransformId = TransformId(0);
    pub const ESN_YES: TransformId = TransformId(1);
}

/// RFC 7296 §3.3.5 transform attribute type of Key Length (TV format, AF bit set on the wire).
pub const ATTR_KEY_LENGTH: u16 = 14;

wire_enum!(
    /// RFC 7296 §3.5 ID Type.
    IdType(u8) {
        ID_IPV4_ADDR = 1,
        ID_FQDN = 2,
        ID_RFC822_ADDR = 3,
        ID_IPV6_ADDR = 5,
        ID_DER_ASN1_DN = 9,
        ID_DER_ASN1_GN = 10,
        ID_KEY_ID = 11,
    }
);

wire_enum!(
    /// RFC 7296 §3.8 Auth Method.
    AuthMethod(u8) {
        RSA_SIG = 1,
        SHARED_KEY = 2,
        DSS_SIG = 3,
        /// RFC 7427
        DIGITAL_SIGNATURE = 14,
    }
);

wire_enum!(
    /// RFC 7296 §3.13.1 TS Type.
    TsType(u8) {
        TS_IPV4_ADDR_RANGE = 7,
        TS_IPV6_ADDR_RANGE = 8,
    }
);

wire_enum!(
    /// RFC 7296 §3.10.1 Notify Message Types: errors below 16384, status from 16384.
    NotifyType(u16) {
        UNSUPPORTED_CRITICAL_PAYLOAD = 1,
        INVALID_IKE_SPI = 4,
        INVALID_MAJOR_VERSION = 5,
        INVALID_SYNTAX = 7,
        INVALID_MESSAGE_ID = 9,
        INVALID_SPI = 11,
        NO_PROPOSAL_CHOSEN = 14,
        INVALID_KE_PAYLOAD = 17,
        AUTHENTICATION_FAILED = 24,
        SINGLE_PAIR_REQUIRED = 34,
        NO_ADDITIONAL_SAS = 35,
        INTERNAL_ADDRESS_FAILURE = 36,
        FAILED_CP_REQUIRED = 37,
        TS_UNACCEPTABLE = 38,
        INVALID_SELECTORS = 39,
        TEMPORARY_FAILURE = 43,
        CHILD_SA_NOT_FOUND = 44,
        INITIAL_CONTACT = 16384,
        SET_WINDOW_SIZE = 16385,
        ADDITIONAL_TS_POSSIBLE = 16386,
        IPCOMP_SUPPORTED = 16387,
        NAT_DETECTION_SOURCE_IP = 16388,
        NAT_DETECTION_DESTINATION_IP = 16389,
        COOKIE = 16390,
        USE_TRANSPORT_MODE = 16391,
        HTTP_CERT_LOOKUP_SUPPORTED = 16392,
        REKEY_SA = 16393,
        ESP_TFC_PADDING_NOT_SUPPORTED = 16394,
        NON_FIRST_FRAGMENTS_ALSO = 16395,
        MOBIKE_SUPPORTED = 16396,
        /// RFC 5685
        REDIRECT_SUPPORTED = 16406,
        /// RFC 7383
        IKEV2_FRAGMENTATION_SUPPORTED = 16430,
        /// RFC 7427
        SIGNATURE_HASH_ALGORITHMS = 16431,
    }
);

impl NotifyType {
    /// Error types are below 16384 (RFC 7296 §3.10.1).
    pub fn is_error(self) -> bool {
        self.0 < 16384
    }
}

/// RFC 7296 §3.1 header flags.
pub mod flags {
    pub const INITIATOR: u8 = 0x08;
    pub const VERSION: u8 = 0x10;
    pub const RESPONSE: u8 = 0x20;
}
