"""The one configuration loader: it assembles each part's typed settings and reports every problem at once."""
