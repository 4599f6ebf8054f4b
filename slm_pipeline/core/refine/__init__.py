"""S6 refine: evaluation against the teacher, promotion, the routing table."""
