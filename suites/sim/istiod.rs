//! istiod: its monitoring port (15014).

use super::State;

pub(super) fn istiod_metrics(st: &State) -> String {
    let version = st
        .releases
        .get(&("istio-system".to_string(), "istiod".to_string()))
        .map(|r| r.version.clone())
        .unwrap_or_default();
    let pods = st.store.list("", "pods", None).len();
    format!(
        "# HELP pilot_xds Number of endpoints connected to this pilot using XDS.\n# TYPE pilot_xds gauge\n\
         pilot_xds{{type=\"ads\",version=\"{version}\"}} 1\npilot_xds{{type=\"wds\",version=\"{version}\"}} 3\n\
         # HELP pilot_services Total services known to pilot.\n# TYPE pilot_services gauge\npilot_services {}\n\
         # HELP pilot_k8s_reg_events Events from k8s registry.\n# TYPE pilot_k8s_reg_events counter\n\
         pilot_k8s_reg_events{{event=\"add\",type=\"Pods\"}} {pods}\n\
         # HELP istio_build Istio component build info.\n# TYPE istio_build gauge\nistio_build{{component=\"pilot\",tag=\"{version}\"}} 1\n",
        st.store.list("", "services", None).len()
    )
}
