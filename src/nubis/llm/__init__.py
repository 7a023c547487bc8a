"""LLM endpoints: an engine behind one small interface, served with the OpenAI API by a photon."""
