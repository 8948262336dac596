//! prost messages generated from host/proto/ctl.proto by build.rs, and each message's frame name.
#![allow(clippy::all, missing_docs)]
include!(concat!(env!("OUT_DIR"), "/warren.ctl.rs"));

/// A message that travels in a frame: the frame names it by its bare proto name, as Habitat does.
pub trait CtlMessage: prost::Message + Default {
    const NAME: &'static str;
}

macro_rules! names {
    ($($t:ident),* $(,)?) => {
        $(impl CtlMessage for $t { const NAME: &'static str = stringify!($t); })*
    };
}

names!(
    NetOk,
    NetErr,
    NetProgress,
    ConsoleLine,
    Handshake,
    NoiseHandshake,
    SupDepart,
    SupRestart,
    SvcFilePut,
    SvcValidateCfg,
    SvcSetCfg,
    SvcLoad,
    SvcUnload,
    SvcStart,
    SvcStop,
    SvcStatus,
    ServiceStatus,
    ServiceCfg,
    PackageIdent,
    ServiceGroup,
    CtlPing,
    CtlPong,
    SupStatus,
    SupStatusReply,
    RingKeyList,
    RingKeys,
    RingKeyInstall,
    RingKeyInstalled,
    RingKeyUse,
    RingKeyRemove,
    RumorInject,
    RumorInjected,
    PkgInstall,
    PkgChunk,
    PkgInstalled,
    AdmitTokenCreate,
    AdmitTokenCreated,
    AdmitTokenList,
    AdmitTokens,
    AdmitTokenRevoke,
    AdmitGroupKeyGen,
    AdmitKeyMade,
    AdmitNodeList,
    AdmitNodes,
    AdmitNodeRevoke,
    AdmitRingRotate,
);

impl NetErr {
    pub fn new(code: ErrCode, msg: impl Into<String>) -> Self {
        NetErr { code: code as i32, msg: msg.into() }
    }

    /// The code, `Internal` for a value this build does not know.
    pub fn err_code(&self) -> ErrCode {
        ErrCode::try_from(self.code).unwrap_or(ErrCode::Internal)
    }
}

impl std::fmt::Display for NetErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Habitat prints "[Err: 4] secret key mismatch".
        write!(f, "[Err: {}] {}", self.code, self.msg)
    }
}

impl std::error::Error for NetErr {}
