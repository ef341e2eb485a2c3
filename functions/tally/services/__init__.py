"""The services: each reads what it needs through its store port, decides, and commits documents' writes."""
