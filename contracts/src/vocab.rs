//! Closed vocabularies: values such as currency, country and language codes,
//! locales, and product or branch codes. A path position that holds several of
//! them is a parameter even when the sibling set is small (twelve currencies,
//! eight branches), and an object keyed by them is a map.
//!
//! The ISO lists are data: ISO 4217 currency codes, ISO 3166-1 alpha-2 country
//! codes (plus `uk` and `eu`, common in URLs) and ISO 639-1 language codes,
//! compared case-insensitively.

/// What kind of code a value looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum CodeClass {
    /// Upper-case letters and digits (`EUR`, `CH`, `ZRH01`, `4U`, `SAV-PLUS`).
    Upper,
    /// Lower-case letters mixed with digits (`zrh01`, `u2`, `g7`).
    LowerAlnum,
    /// A lower-case ISO code (`en`, `ch`, `chf`): only by vocabulary, since
    /// short lower-case words are also route names.
    LowerIso,
    /// A language tag with a region or script (`en-GB`, `de_CH`, `zh-Hant`).
    Locale,
}

impl CodeClass {
    /// Distinct sibling values of this class needed before a position is a
    /// parameter: upper-case and ISO values are rarely route names, lower-case
    /// ones need more evidence.
    pub fn min_siblings(self) -> usize {
        match self {
            CodeClass::Locale => 2,
            CodeClass::Upper => 3,
            CodeClass::LowerAlnum | CodeClass::LowerIso => 3,
        }
    }
}

const CURRENCIES: &str = "aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd \
bob bov brl bsd btn bwp byn bzd cad cdf che chf chw clf clp cny cop cou crc cuc cup cve czk djf \
dkk dop dzd egp ern etb eur fjd fkp gbp gel ghs gip gmd gnf gtq gyd hkd hnl hrk htg huf idr ils \
inr iqd irr isk jmd jod jpy kes kgs khr kmf kpw krw kwd kyd kzt lak lbp lkr lrd lsl lyd mad mdl \
mga mkd mmk mnt mop mru mur mvr mwk mxn mxv myr mzn nad ngn nio nok npr nzd omr pab pen pgk php \
pkr pln pyg qar ron rsd rub rwf sar sbd scr sdg sek sgd shp sle sll sos srd ssp stn svc syp szl \
thb tjs tmt tnd top try ttd twd tzs uah ugx usd usn uyi uyu uyw uzs ved ves vnd vuv wst xaf xag \
xau xcd xdr xof xpd xpf xpt yer zar zmw zwl";

const COUNTRIES: &str = "ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi \
bj bl bm bn bo bq br bs bt bv bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz \
de dj dk dm do dz ec ee eg eh er es et eu fi fj fk fm fo fr ga gb gd ge gf gg gh gi gl gm gn gp \
gq gr gs gt gu gw gy hk hm hn hr ht hu id ie il im in io iq ir is it je jm jo jp ke kg kh ki km \
kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mf mg mh mk ml mm mn mo mp mq mr \
ms mt mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe pf pg ph pk pl pm pn pr ps \
pt pw py qa re ro rs ru rw sa sb sc sd se sg sh si sj sk sl sm sn so sr ss st sv sx sy sz tc td \
tf tg th tj tk tl tm tn to tr tt tv tw tz ua ug uk um us uy uz va vc ve vg vi vn vu wf ws ye yt \
za zm zw";

const LANGUAGES: &str = "aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce \
ch co cr cs cu cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha \
he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku \
kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv \
ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st \
su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu";

fn listed(list: &str, lower: &str) -> bool {
    // The lists are sorted, space-separated codes of one length each.
    let n = lower.len();
    list.split(' ').any(|c| c.len() == n && c == lower)
}

/// Whether the value is an ISO currency, country or language code, in any case.
pub(crate) fn is_iso_code(s: &str) -> bool {
    let b = s.as_bytes();
    if !(2..=3).contains(&b.len()) || !b.iter().all(u8::is_ascii_alphabetic) {
        return false;
    }
    let all_upper = b.iter().all(u8::is_ascii_uppercase);
    let all_lower = b.iter().all(u8::is_ascii_lowercase);
    if !(all_upper || all_lower) {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    match b.len() {
        2 => listed(COUNTRIES, &lower) || listed(LANGUAGES, &lower),
        _ => listed(CURRENCIES, &lower),
    }
}

/// `en-GB`, `de_CH`, `zh-Hant`, `es-419`, and `en-gb` when both halves are ISO codes.
fn is_locale(s: &str) -> bool {
    let Some((lang, region)) = s.split_once(['-', '_']) else {
        return false;
    };
    let lb = lang.as_bytes();
    let rb = region.as_bytes();
    if !(2..=3).contains(&lb.len()) || !lb.iter().all(u8::is_ascii_lowercase) {
        return false;
    }
    let upper_region = rb.len() == 2 && rb.iter().all(u8::is_ascii_uppercase);
    let script =
        rb.len() == 4 && rb[0].is_ascii_uppercase() && rb[1..].iter().all(u8::is_ascii_lowercase);
    let un_region = rb.len() == 3 && rb.iter().all(u8::is_ascii_digit);
    let lower_region = rb.len() == 2
        && rb.iter().all(u8::is_ascii_lowercase)
        && listed(LANGUAGES, lang)
        && listed(COUNTRIES, region);
    upper_region || script || un_region || lower_region
}

/// The code class of a path segment or object key, if it looks like a value
/// from a closed vocabulary.
pub(crate) fn code_class(s: &str) -> Option<CodeClass> {
    let b = s.as_bytes();
    if b.len() < 2 || b.len() > 16 || crate::shape::is_version(s) {
        return None;
    }
    if is_locale(s) {
        return Some(CodeClass::Locale);
    }
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let seps = b.iter().filter(|c| matches!(c, b'-' | b'_' | b'.')).count();
    if letters + digits + seps != b.len()
        || letters == 0
        || !b[0].is_ascii_alphanumeric()
        || !b[b.len() - 1].is_ascii_alphanumeric()
    {
        return None;
    }
    if b.iter().all(|c| !c.is_ascii_lowercase()) {
        return Some(CodeClass::Upper);
    }
    if b.iter().all(|c| !c.is_ascii_uppercase()) {
        if seps == 0 && digits > 0 && b.len() <= 12 {
            return Some(CodeClass::LowerAlnum);
        }
        if seps == 0 && digits == 0 && is_iso_code(s) {
            return Some(CodeClass::LowerIso);
        }
    }
    None
}

/// Whether an object key names a value rather than a field: an ISO code or a
/// locale, or a key that is no identifier in any programming language
/// (`booking.title`, `/path`, `a b`). Namespaced names (`dc:title`, from XML
/// converted to JSON) are fields.
pub(crate) fn is_data_key(k: &str) -> bool {
    is_iso_code(k)
        || is_locale(k)
        || (!k.is_empty()
            && k.bytes().any(|c| matches!(c, b'.' | b'/' | b' '))
            && !k.starts_with('@')
            && !k.starts_with('$'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_codes() {
        for c in ["EUR", "chf", "CH", "de", "en", "JPY", "XAU", "no", "is"] {
            assert!(is_iso_code(c), "{c}");
        }
        for c in ["Eur", "EURO", "e", "users", "qq", "ZZZ", "12"] {
            assert!(!is_iso_code(c), "{c}");
        }
    }

    #[test]
    fn classes() {
        use CodeClass::*;
        let cases = [
            ("EUR", Some(Upper)),
            ("ZRH01", Some(Upper)),
            ("4U", Some(Upper)),
            ("SAV-PLUS", Some(Upper)),
            ("zrh01", Some(LowerAlnum)),
            ("u2", Some(LowerAlnum)),
            ("en", Some(LowerIso)),
            ("chf", Some(LowerIso)),
            ("en-GB", Some(Locale)),
            ("de_CH", Some(Locale)),
            ("zh-Hant", Some(Locale)),
            ("en-gb", Some(Locale)),
            ("id-card", None),
            ("summary", None),
            ("search", None),
            ("latest", None),
            ("nearby", None),
            ("v1", None),
            ("V2", None),
            ("order-items", None),
            ("X", None),
            ("-AB", None),
        ];
        for (s, want) in cases {
            assert_eq!(code_class(s), want, "{s}");
        }
    }

    #[test]
    fn data_keys() {
        for k in ["EUR", "en", "de-CH", "booking.title", "/v1/users", "a b"] {
            assert!(is_data_key(k), "{k}");
        }
        // `id` is an ISO code too: the map rule also asks for several such keys
        // with values of one type.
        for k in [
            "amount",
            "currency",
            "NAME",
            "MATNR",
            "@type",
            "$ref",
            "created_at",
        ] {
            assert!(!is_data_key(k), "{k}");
        }
    }
}
