"""What each pjsua2 peer starts with: an endpoint on a null sound device,
one UDP transport on 127.0.0.1, events polled from the main thread."""
import pjsua2 as pj


def start_endpoint(no_vad=False):
    """no_vad: send RTP through silence too (pjsua's silence detector
    otherwise sends none in pauses and clips the start of words)."""
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.medConfig.noVad = no_vad
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()
    return ep


def account_config():
    acc_cfg = pj.AccountConfig()
    acc_cfg.idUri = "sip:pjsua@127.0.0.1"
    return acc_cfg
