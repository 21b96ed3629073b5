"""Training networks: the loop (``loop``), the server's background jobs (``jobs``), the child process each training
runs in (``child``) and the places every process of a class server shares (``places``). No streamlit."""
