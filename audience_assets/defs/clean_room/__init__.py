"""Clean room: the first-party table published for the collaboration, and each partner's match."""
