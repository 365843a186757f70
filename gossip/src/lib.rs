//! cairn's gossip layer (not built yet; issue 4): what a site publishes about its
//! inventory over chitchat, and the typed cluster view every site rebuilds from it.
