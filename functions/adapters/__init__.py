"""The I/O ring: Firestore, Firebase Auth, webhooks over HTTP, and the objects of a deployed instance."""
